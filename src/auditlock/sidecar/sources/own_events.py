"""Spooling the events a source makes itself (the access proxy, the config watcher).

Those sources batch their events and cannot push back on one sender the way Forward or
HTTP do, so a batch must never be a record the spool cannot take: events go in records
of at most a quarter of the spool (and 1 MiB), and an event the spool can never hold is
refused, logged and counted instead of being retried forever.
"""

from __future__ import annotations

import logging

from auditlock.sidecar.intake import Intake, Processed, RecordTooLarge, SpoolFull

log = logging.getLogger("auditlock.sidecar.own_events")

MAX_RECORD_BYTES = 1024 * 1024
PER_EVENT_OVERHEAD = 16  # msgpack framing of one event in a record, generously


async def spool_events(
    intake: Intake, input_name: str, events: list[bytes]
) -> tuple[int, SpoolFull | None]:
    """Spool canonical events in records that fit. Returns how many leading events are
    done (durable, or refused as never fitting) and the SpoolFull that stopped the rest
    (None when all are done)."""
    budget = min(MAX_RECORD_BYTES, intake.max_record_bytes // 4)
    done = 0
    while done < len(events):
        end, size = done, 0
        while end < len(events) and (end == done or size + len(events[end]) <= budget):
            size += len(events[end]) + PER_EVENT_OVERHEAD
            end += 1
        try:
            await intake.commit(input_name, [(Processed(events=events[done:end]), None)])
        except RecordTooLarge as exc:
            if end - done > 1:  # cannot happen with a quarter of the spool; be safe
                budget //= 2
                continue
            log.error("%s: an event of %d bytes refused: %s", input_name, size, exc)
            intake.metrics.events_rejected.labels(input_name, "too_large_for_spool").inc()
        except SpoolFull as exc:
            return done, exc
        done = end
    return done, None
