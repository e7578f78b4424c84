"""Step 3.2: the segment names of one epoch (docs/FORMAT.md 11.3.2), and what needs only
names and checkpoints from steps 3.4 and 3.5, judged before any line is read.

    names_tile               segment-name, events-missing (a hole), segment-overlap
    signed_coverage          events-missing (tail deleted), unsigned-events (a warning
                             in the open newest epoch)
    checkpoints_agree (3.4)  checkpoint-fork
    stream_stale (3.5)       stream-stale
"""

from __future__ import annotations

from auditlock.ledger.checkpoint import SignedCheckpoint
from auditlock.ledger.names import ObjectName
from auditlock.ledger.report import Finding
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify_context import VerifyOptions
from auditlock.ledger.verify_findings import Place


def names_tile(place: Place, segs: list[ObjectName]) -> tuple[int, list[Finding]]:
    """Segment names (sorted by first, last) have first <= last and tile 0..n-1; returns
    n, the events stored."""
    found: list[Finding] = []
    expected = 0
    for seg in segs:
        if seg.last < seg.first:
            found.append(
                place.find("segment-name", "last seq is before first seq", object=seg.name)
            )
            continue
        if seg.first > expected:
            found.append(
                place.find(
                    "events-missing",
                    "no segment holds these events (segment deleted?)",
                    first_seq=expected,
                    last_seq=seg.first - 1,
                )
            )
        elif seg.first < expected:
            found.append(
                place.find(
                    "segment-overlap",
                    f"overlaps seqs {seg.first}-{min(seg.last, expected - 1)} already stored "
                    "in another segment (duplicated segment?)",
                    object=seg.name,
                )
            )
        expected = max(expected, seg.last + 1)
    return expected, found


def checkpoints_agree(
    place: Place, valid: list[SignedCheckpoint]
) -> tuple[dict[int, SignedCheckpoint], list[Finding]]:
    """Checkpoints of equal tree_size agree on root and head (`checkpoint-fork`). Returns
    the first valid checkpoint of each tree size: the boundaries where step 3.4 compares
    roots."""
    found: list[Finding] = []
    boundaries: dict[int, SignedCheckpoint] = {}
    for sc in valid:
        cp = sc.checkpoint
        seen = boundaries.setdefault(cp.tree_size, sc)
        if seen is not sc and (seen.checkpoint.root, seen.checkpoint.head) != (cp.root, cp.head):
            found.append(
                place.find(
                    "checkpoint-fork",
                    f"checkpoints {seen.checkpoint.index} and {cp.index} disagree about the "
                    f"first {cp.tree_size} events",
                )
            )
    return boundaries, found


def signed_coverage(
    place: Place, valid: list[SignedCheckpoint], stored: int, *, is_newest: bool
) -> list[Finding]:
    """The largest tree_size does not exceed the events stored (`events-missing`), and
    no stored event lies beyond it (`unsigned-events`: a warning only in the open newest
    epoch, where they may be in flight)."""
    found: list[Finding] = []
    covered = max((sc.checkpoint.tree_size for sc in valid), default=0)
    if covered > stored:
        found.append(
            place.find(
                "events-missing",
                f"checkpoints cover {covered} events but segments hold only {stored} "
                "(tail segments deleted?)",
                first_seq=stored,
                last_seq=covered - 1,
            )
        )
    closed = bool(valid) and valid[-1].checkpoint.closed
    if stored > covered:
        if closed or not is_newest:
            found.append(
                place.find(
                    "unsigned-events",
                    "events stored after the last checkpoint of a finished epoch: no "
                    "checkpoint vouches for them",
                    first_seq=covered,
                    last_seq=stored - 1,
                )
            )
        else:
            found.append(
                place.warn(
                    "unsigned-events",
                    "not yet covered by a checkpoint (in flight, or the writer stopped)",
                    first_seq=covered,
                    last_seq=stored - 1,
                )
            )
    return found


def stream_stale(
    place: Place, valid: list[SignedCheckpoint], options: VerifyOptions, now_ns: int
) -> list[Finding]:
    """Step 3.5, for the newest epoch: its last valid checkpoint is a close or an abandon,
    or is at most heartbeat + slack older than now (or --until): else `stream-stale`."""
    if not valid or valid[-1].checkpoint.closed:
        return []
    last = valid[-1].checkpoint
    now = options.until_ns if options.until_ns is not None else now_ns
    allowed = last.heartbeat_ms * 1_000_000 + int(options.slack_seconds * 1e9)
    if now - last.time_ns <= allowed:
        return []
    return [
        place.find(
            "stream-stale",
            f"stream is open and its last checkpoint is from {last.time} "
            f"({(now - last.time_ns) / 1e9:.0f} s before {format_ns(now)}; heartbeat "
            f"every {last.heartbeat_ms / 1000:g} s): the tail was truncated or rolled "
            "back, or the writer stopped without closing",
            first_seq=last.tree_size,
        )
    ]


def segment_times(
    segs: list[ObjectName], valid: list[SignedCheckpoint], object_time: dict[str, int]
) -> None:
    """A segment's signed time is that of the first checkpoint covering it (step 4 uses it
    when the store reports no write time)."""
    by_size = sorted(valid, key=lambda sc: (sc.checkpoint.tree_size, sc.checkpoint.index))
    j = 0
    for seg in sorted(segs, key=lambda s: s.last):
        while j < len(by_size) and by_size[j].checkpoint.tree_size <= seg.last:
            j += 1
        if j < len(by_size):
            object_time.setdefault(seg.name, by_size[j].checkpoint.time_ns)
