"""Closing the streams of pods that are gone for good (docs/operator.md, "Abandoned
streams"; the record is docs/FORMAT.md section 10.6).

A collector killed without a clean shutdown leaves its stream open, and `verify` would
call it `stream-stale` for the rest of its retention. The operator knows which pods
exist. In each witness cycle (operator/witness.py; without a witness, on each periodic
refresh of a policy) it looks at the newest checkpoint of every stream of the policy's
namespace and this cluster in the policy's destination (stream id
`<cluster>_<namespace>_<pod>`, as injection sets it: stream_ids.py) and decides per open
stream:

* a pod of that name exists and carries the collector: its writer is alive, or will
  resume the stream when it starts. Not abandoned (if it never writes, stale is true).
* no pod of that name exists, or one exists without the collector that was created after
  the stream's newest checkpoint (a different pod that will never continue the stream):
  the writer is gone. After `grace` seconds in that state, with the newest checkpoint
  unchanged all along, the operator writes the `abandon` checkpoint.

The grace delay covers a force-deleted pod (`--grace-period=0`) whose containers the
kubelet is still stopping: its collector may still be flushing its last segment, and
every checkpoint it stores restarts the wait. The state is in memory: an operator that
restarts starts every wait again (later, never sooner). A writer that comes back after
all loses nothing: the store refuses a second object under the abandon checkpoint's name,
and a writer that finds its epoch closed continues in a new epoch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

from auditlock import sinks
from auditlock.ledger.abandon import AbandonResult, abandon_stream
from auditlock.ledger.keys import Signer, load_private_key
from auditlock.ledger.newest import StreamTip
from auditlock.operator.destination import open_options, retention_spec
from auditlock.operator.keys import SigningKeyMaterial
from auditlock.operator.kube import PodFacts
from auditlock.operator.stream_ids import pod_of_stream
from auditlock.policy.model import AuditPolicySpec

log = logging.getLogger("auditlock.operator.abandonment")

DEFAULT_GRACE_SECONDS = 300.0
WRITE_TIMEOUT = 30.0


@dataclass
class _Absence:
    since: float  # monotonic time the operator first saw the writer gone
    tip: str  # the newest checkpoint then; a newer one restarts the wait


@dataclass(frozen=True)
class Rollback:
    """A stream whose newest checkpoint is older than one the operator saw before: its
    tail was deleted. Never closed as abandoned (that would seal the truncation)."""

    tip: StreamTip
    seen: tuple[int, int]  # (epoch, index) of the newest checkpoint seen before


@dataclass
class AbandonWatch:
    """Per destination and stream: since when its writer has looked gone, and the newest
    checkpoint ever seen (so a truncated tail is reported, not sealed)."""

    grace_seconds: float = DEFAULT_GRACE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _absent: dict[tuple[str, str], _Absence] = field(default_factory=dict)
    _given_up: set[tuple[str, str, str]] = field(default_factory=set)
    _highest: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    _rollbacks: list[Rollback] = field(default_factory=list)
    _reported: set[tuple[str, str, str]] = field(default_factory=set)

    def rollbacks(self) -> list[Rollback]:
        """Streams found rolled back since the last call (each tip once)."""
        found, self._rollbacks = self._rollbacks, []
        return found

    def due(
        self,
        url: str,
        cluster: str,
        namespace: str,
        tips: dict[str, StreamTip],
        pods: dict[str, PodFacts],
    ) -> list[StreamTip]:
        """The open streams of `cluster`'s `namespace` in `url` whose writer has been gone
        for the whole grace delay; updates the waits of the others. Another cluster's
        streams are never judged: its pods are not the ones `pods` lists."""
        now = self.clock()
        seen: set[tuple[str, str]] = set()
        ready = []
        for stream, tip in tips.items():
            pod = pod_of_stream(cluster, namespace, stream)
            if pod is None or not self._moved_forward(url, tip):
                continue
            if tip.signed is None:
                continue
            if tip.signed.checkpoint.closed or (url, stream, tip.name) in self._given_up:
                continue
            if _writer_may_return(pods.get(pod), tip):
                continue
            key = (url, stream)
            seen.add(key)
            absence = self._absent.get(key)
            if absence is None or absence.tip != tip.name:
                self._absent[key] = _Absence(now, tip.name)
            elif now - absence.since >= self.grace_seconds:
                ready.append(tip)
        mine = [k for k in self._absent if k[0] == url and pod_of_stream(cluster, namespace, k[1])]
        for key in mine:
            if key not in seen:
                del self._absent[key]  # its writer is back (or its stream is closed)
        return ready

    def _moved_forward(self, url: str, tip: StreamTip) -> bool:
        key = (url, tip.stream)
        position = (tip.epoch, tip.index)
        highest = self._highest.get(key)
        if highest is not None and position < highest:
            if (url, tip.stream, tip.name) not in self._reported:
                self._reported.add((url, tip.stream, tip.name))
                self._rollbacks.append(Rollback(tip, highest))
            return False
        self._highest[key] = position
        return True

    def settled(self, url: str, tip: StreamTip, result: AbandonResult) -> None:
        """Forget a stream after an attempt; an attempt that cannot succeed for this tip
        (unusable, foreign key) is not repeated until the stream changes."""
        self._absent.pop((url, tip.stream), None)
        if result.outcome in ("unusable", "foreign-key"):
            self._given_up.add((url, tip.stream, tip.name))


def _writer_may_return(pod: PodFacts | None, tip: StreamTip) -> bool:
    if pod is None:
        return False
    if pod.collector:
        return True
    # A pod of the same name without the collector: the same instance (created before the
    # newest checkpoint; perhaps its collector was removed) may still be what wrote it;
    # one created later will never continue the stream.
    assert tip.signed is not None
    if pod.created is None:
        return True
    created_ns = int(pod.created.astimezone(UTC).timestamp()) * 1_000_000_000
    return created_ns <= tip.signed.checkpoint.time_ns


def _abandon(
    spec: AuditPolicySpec,
    secret_data: dict[str, str] | None,
    material: SigningKeyMaterial,
    tip: StreamTip,
) -> AbandonResult:
    destination = sinks.open(spec.destination.url, **open_options(spec, secret_data))
    try:
        return abandon_stream(
            destination,
            tip.stream,
            Signer(load_private_key(material.private_pem)),
            now_ns=time.time_ns(),
            retention=retention_spec(spec),
            expect=tip.name,
        )
    finally:
        destination.close()


async def close_abandoned(
    watch: AbandonWatch,
    *,
    spec: AuditPolicySpec,
    due: list[StreamTip],
    secret_data: dict[str, str] | None,
    material: SigningKeyMaterial,
    report: Callable[[str, str, str], None],
) -> list[str]:
    """Write the abandon checkpoint of each stream in `due` (from `watch.due`); returns the
    streams closed. `report(stream, outcome, message)` is called for each attempt
    (metric, Event, log); the outcome is an `AbandonResult.outcome`, or `store-error`
    when the store failed (the stream is tried again at the next look)."""
    url = spec.destination.url
    closed = []
    for tip in due:
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(_abandon, spec, secret_data, material, tip), WRITE_TIMEOUT
            )
        except (TimeoutError, sinks.DestinationError, OSError) as exc:
            report(tip.stream, "store-error", f"not stored, tried again later: {exc}")
            continue
        watch.settled(url, tip, result)
        report(tip.stream, result.outcome, result.message)
        if result.outcome == "abandoned":
            closed.append(tip.stream)
    return closed
