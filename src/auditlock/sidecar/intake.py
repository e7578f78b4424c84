"""The intake: the one place where events enter the trail, whatever source sent them.

Sources (sources/) speak a protocol and nothing else; they hand the intake raw entries
and answer their sender with what it says. The intake owns everything between:

- **preparing** (`prepare`): the pipeline (normalize, filter, redact) turns entries into
  canonical event bytes; rejections are counted by reason and logged (rate-limited, so
  a flood of bad input cannot flood the log);
- **deduplication** (`commit`): a batch key (a Forward chunk id or an HTTP
  Idempotency-Key, spool/chunk_ids.py) already durable in the spool stores nothing
  again; one another connection is spooling right now is waited for; a sender-chosen
  event id used before is refused (pipeline/recent_ids.py);
- **durability**: `commit` returns once the events are fsynced in the spool, which is
  when a source may acknowledge;
- **pushback**: when the spool is full, a streaming source waits for room (it stops
  reading, so TCP pushes back on its client) and a request source is refused at once
  (`SpoolFull`: 503 + Retry-After). Which one is the source's `Delivery`;
- **taps** (`add_tap`): observers of accepted events, told after each durable commit
  (docs/architecture.md, "Intake taps").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditlock.sidecar.metrics import Metrics
from auditlock.sidecar.pipeline import Pipeline, Processed, Rejected
from auditlock.sidecar.pipeline.recent_ids import RecentIds
from auditlock.sidecar.pipeline.typed_records import TypedRecords
from auditlock.sidecar.spool.spool import RecordTooLarge, Spool, SpoolFull, SpoolWriteFailed

log = logging.getLogger("auditlock.sidecar.intake")

__all__ = [
    "OWN",
    "REQUEST",
    "STREAM",
    "Accepted",
    "ChunkNotStored",
    "Committed",
    "Delivery",
    "Group",
    "Intake",
    "Processed",
    "RateLimit",
    "RecordTooLarge",
    "SpoolFull",
    "Tap",
]

WRITE_RETRY_SECONDS = 0.5  # a waiting source retries this long after the disk refused a write


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a source answers its sender, which decides what the intake does for it."""

    # A full spool: wait until the batch fits (the source stops reading meanwhile), or
    # raise SpoolFull at once.
    wait_for_room: bool
    # One invalid or repeated event refuses the whole batch (nothing stored), instead of
    # that event alone.
    all_or_nothing: bool


# Forward: per-event rejections (the chunk is acknowledged anyway), TCP pushback.
STREAM = Delivery(wait_for_room=True, all_or_nothing=False)
# HTTP: all-or-nothing answers, 503 when full.
REQUEST = Delivery(wait_for_room=False, all_or_nothing=True)
# Events a source makes itself (config watcher, access proxy, the collector's own alerts):
# the source keeps them and retries when the spool is full.
OWN = Delivery(wait_for_room=False, all_or_nothing=False)

# A prepared batch and its key (forward_key / http_key in spool/chunk_ids.py), or None.
Group = tuple[Processed, str | None]


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a tap is given: the events of one commit, durable in the spool.

    `events` are the canonical bytes (RFC 8785) exactly as the ledger will store them;
    each names its `id`. Ledger seqs are not known yet (shipping assigns them in spool
    order: `record` is the spool record number, which orders commits).
    """

    stream_id: str
    input_name: str
    record: int
    events: Sequence[bytes]


Tap = Callable[[Accepted], None]


@dataclass(slots=True)
class Committed:
    """What `commit` did with a batch."""

    stored: int = 0  # events made durable
    duplicates: int = 0  # groups whose key was durable already (or spooled by another)
    # all_or_nothing: the batch was refused (nothing stored); it holds the rejections.
    refused: Processed | None = None


class ChunkNotStored(Exception):
    """Another connection's commit of a key this batch waited for failed: no ack."""

    def __init__(self, message: str, duplicates: int) -> None:
        super().__init__(message)
        self.duplicates = duplicates


@dataclass
class _Tap:
    name: str
    call: Tap
    errors: int = field(default=0)


class Intake:
    def __init__(
        self,
        pipeline: Pipeline,
        spool: Spool,
        metrics: Metrics,
        recent_ids: RecentIds | None = None,
        stream_id: str = "",
    ) -> None:
        self.pipeline = pipeline
        self.recent_ids = recent_ids
        self.spool = spool
        self.metrics = metrics
        self.stream_id = stream_id
        self._log_budget = RateLimit(per_second=5)
        self._tap_log_budget = RateLimit(per_second=1)
        self._taps: list[_Tap] = []
        self.accepting = True

    # --- taps ---------------------------------------------------------------------

    def add_tap(self, tap: Tap, name: str | None = None) -> None:
        """Call `tap(Accepted)` after every durable commit of one or more events.

        The call is synchronous, on the event loop, inside the commit of the batch: a tap
        must only queue its work (a list, an asyncio.Queue, a bounded deque) and return.
        An exception from a tap is logged (rate-limited) and counted
        (`auditlock_sidecar_tap_errors_total{tap}`), and never reaches the source: the
        events are durable and their sender is acknowledged regardless.
        """
        self._taps.append(_Tap(name or str(getattr(tap, "__qualname__", repr(tap))), tap))

    def _tell_taps(self, input_name: str, record: int, events: Sequence[bytes]) -> None:
        accepted = Accepted(self.stream_id, input_name, record, events)
        for tap in self._taps:
            try:
                tap.call(accepted)
            except Exception:
                tap.errors += 1
                self.metrics.tap_errors.labels(tap.name).inc()
                if self._tap_log_budget.allow():
                    log.exception("intake tap %s failed (ignored; the events are stored)", tap.name)

    # --- preparing ------------------------------------------------------------------

    def prepare(
        self,
        input_name: str,
        entries: Iterable[tuple[str, int, Any]] | TypedRecords,
        count: bool = True,
    ) -> Processed:
        """Run the pipeline over raw entries; `count=False` leaves counting to `commit`,
        for a batch that may yet turn out to be a retransmission."""
        out = self.pipeline.process_all(input_name, entries)
        if count:
            self.count(input_name, out)
        return out

    def count(self, input_name: str, out: Processed) -> None:
        """Count a prepared batch's rejections and filtered events (once per batch)."""
        if out.rejected_count:
            self.count_rejections(
                input_name,
                [r for _, r in out.rejected[:1]],
                out.rejected_reasons,
                out.rejected_count,
            )
        if out.filtered:
            self.metrics.events_filtered.labels(input_name).inc(out.filtered)

    def count_rejections(
        self,
        input_name: str,
        rejections: list[Rejected],
        by_reason: dict[str, int] | None = None,
        total: int | None = None,
    ) -> None:
        if by_reason is None:
            by_reason = {}
            for rejection in rejections:
                by_reason[rejection.reason] = by_reason.get(rejection.reason, 0) + 1
        for reason, count in by_reason.items():
            self.metrics.events_rejected.labels(input_name, reason).inc(count)
        if rejections and self._log_budget.allow():
            first = rejections[0]
            log.warning(
                "rejected %d event(s) from %s: %s (field %s)",
                len(rejections) if total is None else total,
                input_name,
                first,
                first.field,
            )

    # --- committing -----------------------------------------------------------------

    async def commit(
        self,
        input_name: str,
        groups: Sequence[Group],
        delivery: Delivery = OWN,
        stopping: Callable[[], bool] | None = None,
    ) -> Committed:
        """Store the prepared groups durably, once; returns when they are fsynced.

        Groups whose key is durable already store nothing (`duplicates`). A key another
        connection is spooling right now: a streaming source stores the rest of its
        batch first and then waits for that commit (`ChunkNotStored` if it failed), so a
        retransmission never holds up what is new; a request waits for it first and
        then decides again (a failed commit leaves the key to this one).

        Raises RecordTooLarge (can never fit), SpoolFull (a full spool when the source
        does not wait, or the intake or the source (`stopping`) shutting down).
        """
        if delivery.all_or_nothing:
            return await self._commit_whole(input_name, groups)
        counted = False
        while True:
            # From the classification to the spool registering the fresh keys there is
            # no await, so no other commit can slip in between.
            fresh, keys, duplicates, waits = self._classify(groups)
            if not counted:
                self.count(input_name, fresh)
                counted = True
            try:
                stored = await self._append(input_name, fresh, keys)
                break
            except RecordTooLarge:
                raise
            except SpoolFull as exc:
                if not delivery.wait_for_room or not self.accepting or (stopping and stopping()):
                    raise
                await self._wait_for_room(exc)
        for future in waits:
            try:
                await future
            except Exception as exc:
                raise ChunkNotStored(f"chunk not stored: {exc}", duplicates) from None
        return Committed(stored=stored, duplicates=duplicates)

    async def _commit_whole(self, input_name: str, groups: Sequence[Group]) -> Committed:
        (prepared, key), *rest = groups
        if rest:
            raise ValueError("an all-or-nothing batch is one group")
        if prepared.rejected_count:
            self.count(input_name, prepared)
            return Committed(refused=prepared)
        spool = self.spool
        if key is not None:
            while (inflight := spool.inflight_chunk(key)) is not None:
                try:
                    await inflight
                except Exception:  # that commit failed; this one may still succeed
                    break
            if spool.seen_chunk(key):
                return Committed(duplicates=1)
        duplicates = self.duplicate_ids(prepared)
        if duplicates:  # a repeated id: refused like any invalid event
            for _, entry, rejection in sorted(duplicates, key=lambda d: d[1]):
                prepared.reject(entry, rejection)
            self.count(input_name, prepared)
            return Committed(refused=prepared)
        self.count(input_name, prepared)
        stored = await self._append(input_name, prepared, [key] if key is not None else [])
        return Committed(stored=stored)

    def _classify(self, groups: Sequence[Group]) -> tuple[Processed, list[str], int, list[Any]]:
        """(the fresh events, their keys, groups already stored, commits to wait for)."""
        spool = self.spool
        fresh = Processed()
        keys: list[str] = []
        duplicates = 0
        waits: list[asyncio.Future[int]] = []
        for prepared, key in groups:
            if key is not None:
                if spool.seen_chunk(key) or key in keys:
                    duplicates += 1
                    continue
                inflight = spool.inflight_chunk(key)
                if inflight is not None:
                    duplicates += 1
                    waits.append(inflight)
                    continue
                keys.append(key)
            fresh.extend(prepared, 0)
            prepared.unstorable = []  # counted by the append below, once
        return fresh, keys, duplicates, waits

    async def _wait_for_room(self, full: SpoolFull) -> None:
        # No polling: woken by a release; after a pause when the disk refused the write.
        if isinstance(full, SpoolWriteFailed):
            await asyncio.sleep(WRITE_RETRY_SECONDS)
        else:
            await self.spool.wait_for_room(full.needed)

    async def wait_for_room(self, needed: int, seconds: float) -> None:
        """Wait up to `seconds` until `needed` bytes fit in the spool (for a source that
        keeps its own events while the spool is full)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.spool.wait_for_room(needed), seconds)

    @property
    def max_record_bytes(self) -> int:
        """The largest batch the spool could ever take in one record."""
        return self.spool.max_bytes

    async def _append(self, input_name: str, prepared: Processed, keys: list[str]) -> int:
        """Spool the events and keys durably; the number of events stored."""
        if not self.accepting:
            raise SpoolFull("the sidecar is shutting down")
        if prepared.unstorable:  # counted once, when the rest is committed
            self.count_rejections(input_name, prepared.unstorable)
            prepared.unstorable = []
        duplicates = self.duplicate_ids(prepared)
        if duplicates:  # not seen when prepared: committed meanwhile, or twice in a batch
            prepared.drop({event for event, _, _ in duplicates})
            self.count_rejections(input_name, [rejection for _, _, rejection in duplicates])
        events = prepared.events
        if not events and not keys:
            return 0
        ids = [key for key, _, _ in prepared.ids]
        recent = self.recent_ids
        # Remembered before the first await, so a concurrent batch sees them; forgotten
        # again when the events are not stored.
        if recent is not None:
            recent.add(ids)
        spool = self.spool
        try:
            number = await spool.append(events, keys)
        except SpoolFull:
            self.metrics.pushback.labels(input_name).inc()
            if recent is not None:
                recent.discard(ids)
            raise
        except BaseException:
            if recent is not None:
                recent.discard(ids)
            raise
        self.metrics.events_in.labels(input_name).inc(len(events))
        if events and self._taps:
            self._tell_taps(input_name, number, events)
        return len(events)

    def duplicate_ids(self, prepared: Processed) -> list[tuple[int, int, Rejected]]:
        """Events of `prepared` whose sender-chosen id is already remembered or repeats an
        earlier one of the batch: (event index, entry index, rejection)."""
        recent = self.recent_ids
        if recent is None or not prepared.ids:
            return []
        found: list[tuple[int, int, Rejected]] = []
        seen: set[int] = set()
        for key, event, entry in prepared.ids:
            if key in recent or key in seen:
                found.append(
                    (
                        event,
                        entry,
                        Rejected(
                            "duplicate_id",
                            "id",
                            "id already used in this stream (the last "
                            f"{recent.window} ids are remembered)",
                        ),
                    )
                )
            seen.add(key)
        return found

    def close(self) -> None:
        """Refuse every later commit (the sidecar is stopping)."""
        self.accepting = False


class RateLimit:
    """At most `per_second` log lines; counts what it held back (`suppressed`)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self._interval
        return True

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count
