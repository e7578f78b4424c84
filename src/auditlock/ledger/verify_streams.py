"""Step 3: each stream, epoch by epoch (docs/FORMAT.md 11.3).

`verify_stream` is the step list of one stream, in the order the checks run:

    3     epochs are 0, 1, ...                           epoch-missing
    3.1   checkpoints (verify_checkpoints)               checkpoint-*, key-*, time-gap, ...
    3.2   segment names (verify_segments)                segment-name, events-missing, ...
    3.4   checkpoints of one size agree (segments)       checkpoint-fork
    3.2   coverage (verify_segments)                     events-missing, unsigned-events
    3.5   open stream (verify_segments, newest epoch)    stream-stale
    3.3+4 lines and roots (verify_events)                segment-*, chain-broken, ...
          between epochs                                 warning restart

Steps 3.4 (checkpoint-fork) and 3.5 need only names and checkpoints, so they are judged
before any line is read; the roots of 3.4 are compared while the lines are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from auditlock.ledger.lines import ZERO_HASH
from auditlock.ledger.report import StreamSummary
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify_checkpoints import (
    EpochCheckpoints,
    KeysStored,
    indexes_complete,
    read_checkpoints,
)
from auditlock.ledger.verify_context import StreamContext
from auditlock.ledger.verify_events import AcceptedLines, ContentCheck, EventScan
from auditlock.ledger.verify_findings import Notes, Place, holes
from auditlock.ledger.verify_inventory import EpochObjects
from auditlock.ledger.verify_segments import (
    checkpoints_agree,
    names_tile,
    segment_times,
    signed_coverage,
    stream_stale,
)
from auditlock.ledger.verify_trust import Trust


@dataclass
class StreamResult:
    """What one stream adds to the report besides its findings."""

    summary: StreamSummary
    events_verified: int = 0
    checkpoints_verified: int = 0
    object_time: dict[str, int] = field(default_factory=dict)


def verify_stream(
    ctx: StreamContext,
    trust: Trust,
    notes: Notes,
    stream: str,
    epochs: dict[int, EpochObjects],
    result: StreamResult,
    *,
    keep_lines: bool = False,
) -> Iterator[AcceptedLines]:
    """Check one stream into `notes` and `result`; yields its accepted lines when
    `keep_lines` (else nothing)."""
    numbers = sorted(epochs)
    missing = holes(numbers)
    if missing:
        notes.add([Place(stream).find("epoch-missing", f"epochs {missing} have no objects")])
    allowed = trust.anchored()
    keys_stored = KeysStored(trust.stored)
    content = ContentCheck(stream)
    incoming = ZERO_HASH
    last_time: int | None = None
    for number in numbers:
        place = Place(stream, number)
        objects = epochs[number]
        # 3.1 checkpoints
        checkpoints = EpochCheckpoints(
            place, max(objects.checkpoints, default=-1), incoming, allowed
        )
        notes.add(indexes_complete(place, objects.checkpoints))
        if objects.checkpoints:
            for index, loaded in read_checkpoints(ctx, objects.checkpoints):
                with notes.guard(place, object=objects.checkpoints[index]):
                    notes.add(
                        checkpoints.check(
                            ctx, trust, keys_stored, objects.checkpoints, index, loaded
                        )
                    )
        valid = checkpoints.valid
        # 3.2 segment names, 3.4 forks, 3.2 coverage, 3.5 staleness
        segs = sorted(objects.segments, key=lambda s: (s.first, s.last))
        stored, found = names_tile(place, segs)
        notes.add(found)
        boundaries, found = checkpoints_agree(place, valid)
        notes.add(found)
        segment_times(segs, valid, ctx.object_time)
        is_newest = number == numbers[-1]
        notes.add(signed_coverage(place, valid, stored, is_newest=is_newest))
        if is_newest:
            notes.add(stream_stale(place, valid, ctx.options, ctx.now_ns))
        # 3.3 lines, 3.4 roots
        scan = EventScan(ctx, notes, place, segs, valid, boundaries, content, keep_lines)
        yield from scan.run()
        _summarise(result, scan, checkpoints)
        if allowed is None and checkpoints.allowed is not None:
            allowed = checkpoints.allowed
        if valid and last_time is not None:
            notes.add(
                [
                    place.warn(
                        "restart",
                        f"new epoch after a restart: no checkpoints from "
                        f"{format_ns(last_time)} to {valid[0].checkpoint.time}",
                    )
                ]
            )
        if valid:
            last_time = valid[-1].checkpoint.time_ns
        incoming = checkpoints.last_digest
    # 3.3 ids repeated far apart (in runs written to disk): reported as the stream ends
    notes.add(content.end_stream())


def _summarise(result: StreamResult, scan: EventScan, checkpoints: EpochCheckpoints) -> None:
    summary, valid = result.summary, checkpoints.valid
    summary.events += scan.verified
    result.events_verified += scan.verified
    for who, count in scan.observers.items():
        summary.observers[who] = summary.observers.get(who, 0) + count
    summary.checkpoints += len(valid)
    for sc in valid:
        if sc.checkpoint.key_id not in summary.key_ids:
            summary.key_ids.append(sc.checkpoint.key_id)
    if valid:
        if summary.first_checkpoint_time is None:
            summary.first_checkpoint_time = valid[0].checkpoint.time
        summary.last_checkpoint_time = valid[-1].checkpoint.time
        summary.closed = valid[-1].checkpoint.kind == "close"
        summary.abandoned = valid[-1].checkpoint.abandoned
    result.checkpoints_verified += len(valid)
