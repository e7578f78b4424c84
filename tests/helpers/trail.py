"""Reading a trail a collector stored, the way a test looks at it, and
waiting for the operator to close an abandoned stream in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditlock.ledger.newest import StreamTip, newest_checkpoint
from auditlock.sinks import Destination
from tests.helpers.policies import wait_for


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
