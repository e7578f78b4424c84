"""Reading a trail a collector stored, the way a test looks at it, and
waiting for the operator to close an abandoned stream in it and to say so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditlock.ledger.newest import StreamTip, newest_checkpoint
from auditlock.sinks import Destination
from tests.helpers.policies import wait_for

if TYPE_CHECKING:
    from tests.servers.kube_controlplane import KubeControlPlane


def stored_events(store: Path) -> list[dict[str, Any]]:
    """The events of every (uncompressed) segment below `store`, in file-name order."""
    events = []
    for segment in sorted(store.glob("streams/*/*/seg-*.jsonl")):
        for line in segment.read_bytes().splitlines():
            events.append(json.loads(line)["event"])
    return events


def wait_abandoned(store: Destination, stream: str, timeout: float = 30) -> StreamTip:
    """The stream's newest checkpoint once it is the abandon checkpoint the operator
    stores for a writer that is gone."""

    def abandoned() -> StreamTip | None:
        tip = newest_checkpoint(store, stream)
        closed = tip is not None and tip.signed is not None and tip.signed.checkpoint.abandoned
        return tip if closed else None

    return wait_for("the abandon checkpoint", abandoned, timeout=timeout)


def wait_abandoned_event(kube: KubeControlPlane, namespace: str, stream: str) -> None:
    """Wait for the Kubernetes Event the operator posts on the policy when it closes
    `stream` as abandoned."""
    from kubernetes import client

    def announced() -> bool:
        with kube.api_client() as api:
            events = client.CoreV1Api(api).list_namespaced_event(namespace)
        return any(e.reason == "StreamAbandoned" and stream in (e.message or "")
                   for e in events.items)  # fmt: skip

    wait_for("the StreamAbandoned event", announced, timeout=15)
