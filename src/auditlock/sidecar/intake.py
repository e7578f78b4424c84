"""The stage every source calls: pipeline (normalize, filter, redact) then spool.

A source passes raw entries and, for Forward, the chunk ids it must acknowledge. The
intake answers with what happened to each entry; `commit` returns once the accepted
events are durable (fsynced), which is when the source may acknowledge. Rejections
are counted by reason and logged (rate-limited, so a flood of bad input cannot flood
the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from auditlock.sidecar.metrics import Metrics
from auditlock.sidecar.pipeline import Pipeline, Processed, Rejected
from auditlock.sidecar.pipeline.recent_ids import RecentIds
from auditlock.sidecar.spool.spool import Spool, SpoolFull

log = logging.getLogger("auditlock.sidecar.intake")

__all__ = ["Intake", "Prepared", "RateLimit", "SpoolFull"]


Prepared = Processed  # events (canonical bytes), rejected, filtered, unstorable


class Intake:
    def __init__(
        self,
        pipeline: Pipeline,
        spool: Spool,
        metrics: Metrics,
        recent_ids: RecentIds | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.recent_ids = recent_ids
        self.spool = spool
        self.metrics = metrics
        self._log_budget = RateLimit(per_second=5)
        self.accepting = True

    def prepare(
        self, input_name: str, entries: Iterable[tuple[str, int, Any]], count: bool = True
    ) -> Prepared:
        """Run the pipeline over raw entries; `count=False` leaves counting to the caller
        (`count`), e.g. for a batch that may yet turn out to be a retransmission."""
        out = self.pipeline.process_all(input_name, entries)
        if count:
            self.count(input_name, out)
        return out

    def count(self, input_name: str, out: Prepared) -> None:
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

    async def commit(self, input_name: str, prepared: Prepared, chunks: list[str]) -> int | None:
        """Spool the prepared events durably; None when there was nothing to store.

        Raises SpoolFull when the spool has no room (the caller pushes back).
        """
        if not self.accepting:
            raise SpoolFull("the sidecar is shutting down")
        if prepared.unstorable:  # counted once, when the rest is committed
            self.count_rejections(input_name, prepared.unstorable)
            prepared.unstorable = []
        duplicates = self.duplicate_ids(prepared)
        if duplicates:  # not seen when prepared: committed meanwhile, or twice in a batch
            prepared.drop({event for event, _, _ in duplicates})
            self.count_rejections(input_name, [rejection for _, _, rejection in duplicates])
        if not prepared.events and not chunks:
            return None
        keys = [key for key, _, _ in prepared.ids]
        # Remembered before the first await, so a concurrent batch sees them; forgotten
        # again when the events are not stored.
        if self.recent_ids is not None:
            self.recent_ids.add(keys)
        payload = self.spool.pack_encoded(prepared.events, chunks)
        try:
            number = await self.spool.append_packed(payload, chunks)
        except SpoolFull:
            self.metrics.pushback.labels(input_name).inc()
            if self.recent_ids is not None:
                self.recent_ids.discard(keys)
            raise
        except BaseException:
            if self.recent_ids is not None:
                self.recent_ids.discard(keys)
            raise
        self.metrics.events_in.labels(input_name).inc(len(prepared.events))
        return number

    def duplicate_ids(self, prepared: Prepared) -> list[tuple[int, int, Rejected]]:
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
