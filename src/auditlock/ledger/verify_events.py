"""Steps 3.3 and 3.4: the lines of one epoch, and the Merkle roots its checkpoints sign
(docs/FORMAT.md 11.3.3 and 11.3.4). One pass reads each segment once and hashes each line
once; the hash serves the chain and the tree.

    EventScan     reading segments          segment-corrupt, object-unreadable, segment-length
    ChainCheck    envelope and chain (3.3)  foreign-event, seq-mismatch, chain-broken,
                                            line-corrupt, line-not-canonical
    ContentCheck  the event inside (3.3,    line-not-canonical, event-invalid;
                  line_rules.py)            warning duplicate-id
    TreeCheck     roots (3.4)               root-mismatch

The fast path is inside each part: `ChainCheck` compares a whole segment's prefixes and
suffixes with the bytes FORMAT.md prescribes (no JSON parser), `ContentCheck` decodes and
re-encodes a whole segment's events in one call each, `TreeCheck` hashes the tree level by
level. A line is parsed on its own only when it fails, to say precisely why.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditlock.ledger.checkpoint import Checkpoint, SignedCheckpoint
from auditlock.ledger.errors import FormatError
from auditlock.ledger.fetch import prefetch
from auditlock.ledger.limits import MAX_STORED_SEGMENT_BYTES
from auditlock.ledger.line_rules import LineRules
from auditlock.ledger.lines import (
    ZERO_HASH,
    LineFormat,
    claimed_prev,
    event_hash,
    leaf_hashes,
    line_prefix,
)
from auditlock.ledger.merkle import Frontier
from auditlock.ledger.names import ObjectName
from auditlock.ledger.observer import observer_of_details
from auditlock.ledger.report import Finding
from auditlock.ledger.segment import decode_segment
from auditlock.ledger.verify_context import StreamContext
from auditlock.ledger.verify_findings import Notes, Place, shown
from auditlock.sinks.base import DestinationError, ObjectNotFound, ObjectUnreadable


@dataclass
class AcceptedLines:
    """Consecutive lines a checkpoint root matched with no broken line before them: what
    `events_verified` counts (FORMAT.md 11.3.4)."""

    stream: str
    epoch: int
    first_seq: int
    lines: list[bytes]


@dataclass(frozen=True)
class VerifiedEvent:
    """One event verify accepted: its line was under a checkpoint root that matched, with
    no broken line before it in that checkpoint's interval."""

    stream: str
    epoch: int
    seq: int
    line: bytes  # the stored line, without its LF

    @property
    def event(self) -> dict[str, Any]:
        """The event, parsed from the line's canonical bytes."""
        event: dict[str, Any] = orjson.loads(self.line)["event"]
        return event


@dataclass
class _BrokenRun:
    """Consecutive broken lines: the first one's diagnosis, and how many follow it."""

    code: str
    message: str
    first_seq: int
    last_seq: int
    consequences: int = 0  # broken lines right after it
    last_bad: int = 0  # the seq of the last of them


class ChainCheck:
    """Each line against the one before it (FORMAT.md 11.3.3, envelope and chain).

    After a broken line it carries on from that line (its hash; its own seq when it names
    one of this epoch), so a duplicated, deleted or spliced line is one finding however
    many lines it shifts, and an unrelated edit further on is still found. Consecutive
    broken lines are one problem: the first is named, the rest counted."""

    def __init__(self, place: Place, envelope: LineFormat, seq: int, prev: bytes) -> None:
        self.place = place
        self.envelope = envelope
        self.prev: bytes | None = prev  # None: after a gap, trust the next line's own prev
        self.seq = seq
        self.run: _BrokenRun | None = None

    def lines(
        self, body: list[bytes]
    ) -> tuple[list[bytes], list[int], list[int] | None, list[Finding]]:
        """Leaf hashes of `body`, the indexes of the lines that break the chain, the seq
        of each line (None: first + i, as on the fast path), and the findings of runs
        that ended inside `body`."""
        prev, seq = self.prev, self.seq
        if prev is not None and body:
            # Fast path, in bulk: hash every line, then compare every line's prefix and
            # suffix with the bytes FORMAT.md says they must be. No JSON parsing.
            leaves = leaf_hashes(body)
            expected = self.envelope.suffixes(seq, [prev, *leaves[:-1]])
            prefix = self.envelope.prefix
            if all(map(bytes.endswith, body, expected)) and all(
                map(bytes.startswith, body, itertools.repeat(prefix))
            ):
                self.prev, self.seq = leaves[-1], seq + len(body)
                return leaves, [], None, self.close_run()
        return self._slowly(body)

    def _slowly(self, body: list[bytes]) -> tuple[list[bytes], list[int], list[int], list[Finding]]:
        """Line by line, diagnosing the first line of each broken run."""
        envelope = self.envelope
        prev, seq = self.prev, self.seq
        leaves: list[bytes] = []
        bad: list[int] = []
        seqs: list[int] = []
        found: list[Finding] = []
        for i, line in enumerate(body):
            if prev is None:  # after a gap: accept this line's own prev, check the rest
                named = claimed_prev(line)
                prev = ZERO_HASH if named is None else named
            if envelope.fits(line, seq, prev):
                found += self.close_run()
            else:
                bad.append(i)
                if self.run is None:
                    self.run = self._diagnose(line, seq, prev)
                else:
                    self.run.last_bad = seq
                    self.run.consequences += 1
                claimed = envelope.claimed_seq(line)
                if claimed is not None:
                    seq = claimed  # carry on from where this line says it belongs
            seqs.append(seq)
            prev = event_hash(line)
            leaves.append(prev)
            seq += 1
        self.prev, self.seq = prev, seq
        return leaves, bad, seqs, found

    def close_run(self) -> list[Finding]:
        """The finding of the broken run that just ended, if any."""
        run, self.run = self.run, None
        if run is None:
            return []
        message = run.message
        if run.consequences:
            after = run.last_seq + 1
            span = f"seq {after}" if after == run.last_bad else f"seqs {after}-{run.last_bad}"
            message += (
                f"; {span} after it ({run.consequences} line(s)) fail as a consequence, "
                "not reported one by one"
            )
        return [self.place.find(run.code, message, first_seq=run.first_seq, last_seq=run.last_seq)]

    def _diagnose(self, line: bytes, seq: int, prev: bytes | None) -> _BrokenRun:
        """Why a line does not fit: `line-corrupt`, `foreign-event`, `seq-mismatch`,
        `chain-broken`, else `line-not-canonical`."""
        try:
            envelope = orjson.loads(line)  # bounded depth and size: see limits.py
            if not isinstance(envelope, dict):
                raise ValueError("not an object")
        except ValueError:
            return _BrokenRun(
                "line-corrupt", "line is not valid JSON (altered or truncated)", seq, seq
            )
        stream, epoch, found = envelope.get("stream"), envelope.get("epoch"), envelope.get("seq")
        if stream != self.place.stream or epoch != self.place.epoch:
            return _BrokenRun(
                "foreign-event",
                f"line belongs to stream {shown(stream)} epoch {shown(epoch)} (spliced in)",
                seq,
                seq,
            )
        if found != seq:
            return _BrokenRun(
                "seq-mismatch",
                f"found seq {shown(found)} where {seq} belongs "
                "(events deleted, duplicated or reordered)",
                seq,
                seq,
            )
        if prev is not None and envelope.get("prev") != prev.hex():
            return _BrokenRun(
                "chain-broken",
                f"prev does not match the hash of seq {seq - 1}: an event was altered, "
                "removed or replaced",
                max(seq - 1, 0),
                seq,
            )
        return _BrokenRun("line-not-canonical", "line is not in the canonical form", seq, seq)


class ContentCheck:
    """The event inside each line (FORMAT.md sections 3 to 5, via line_rules.py): the one
    place where each stored line's event is looked at, whether or not the line's
    structure checked out. Who observed each event is counted (observer.py) from the same
    decoding. One per stream: the ids of a stream are checked across its epochs, and a
    repeat found only when the stream ends (seen_ids.py) is returned by `end_stream`."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.rules = LineRules()
        self.observers: dict[str, int] = {}  # of the current epoch
        self._sink: list[Finding] = []  # where reports made now go

    def lines(
        self,
        place: Place,
        seg: ObjectName,
        lines: list[bytes],
        first_seq: int,
        seqs: list[int] | None,
    ) -> list[Finding]:
        found: list[Finding] = []
        self._sink = found
        sink = self

        # Name each line by the seq the chain check gave it (after a duplicated or deleted
        # line, the seq it carries rather than its position).
        def at(seq: int) -> int:
            return seq if seqs is None else seqs[seq - first_seq]

        def find(seq: int, code: str, message: str) -> None:
            found.append(place.find(code, message, first_seq=at(seq), object=seg.name))

        def warn(seq: int, code: str, message: str) -> None:
            # `sink`, not `found`: a repeat may be reported when the stream ends
            sink._sink.append(place.warn(code, message, first_seq=at(seq), object=seg.name))

        prefix_len = len(line_prefix(place.epoch or 0))
        details = self.rules.check(self.stream, lines, first_seq, prefix_len, find, warn)
        tally = self.observers
        for who, count in Counter(map(observer_of_details, details)).items():
            tally[who] = tally.get(who, 0) + count
        return found

    def end_stream(self) -> list[Finding]:
        """Repeated ids found only now (in ids of runs the stream wrote to disk)."""
        late: list[Finding] = []
        self._sink = late
        self.rules.end_stream()
        return late


class TreeCheck:
    """The Merkle tree of the epoch against its checkpoints (FORMAT.md 11.3.4).

    Leaves are added and the root and head compared at each checkpoint size. A broken
    line taints the tree; it resynchronises at the next checkpoint whose `head` is the
    hash of a line found after the break (by content, so a shifted segment
    resynchronises too), from that checkpoint's frontier. A line counts in `verified`
    only once a checkpoint root over it matched with no break in between."""

    def __init__(
        self,
        place: Place,
        boundaries: dict[int, SignedCheckpoint],
        start: int,
        frontier: Frontier,
        head: bytes,
        keep_lines: bool,
    ) -> None:
        self.place = place
        self.boundaries = boundaries
        self.frontier = frontier
        self.head = head
        self.marks = sorted(b for b in boundaries if b > start)
        self.heads = {
            sc.checkpoint.head: sc.checkpoint for size, sc in boundaries.items() if size > start
        }
        self.pos = start
        self.tainted = False
        self.clean_from: int | None = start  # leaves from here on are unbroken
        self.verified = 0
        self.keep_lines = keep_lines
        self._held: list[bytes] = []  # lines from clean_from on, while keep_lines
        self.accepted: list[AcceptedLines] = []

    def at_segment(self, first: int) -> Checkpoint | None:
        """A segment starts at `first`. After a break, start again from the checkpoint at
        this segment's start (returned, so the chain starts from its head too)."""
        if first != self.pos:
            self.taint()
            self.pos = first
        if self.tainted and first in self.boundaries:
            cp = self.boundaries[first].checkpoint
            self.resync(cp)
            return cp
        return None

    def grow(self, leaves: list[bytes], bad: list[int], lines: list[bytes]) -> list[Finding]:
        """Add the leaves of unbroken lines to the tree; taint it at a broken one; while
        tainted, look for the head of a later checkpoint to resynchronise from."""
        found: list[Finding] = []
        n = len(leaves)
        i = 0
        next_bad = iter([*bad, n])
        b = next(next_bad)
        while i < n:
            if self.tainted:
                heads = self.heads
                j = next((j for j in range(i, n) if leaves[j] in heads), n)
                self.pos += j - i
                if j == n:
                    return found
                self.resync(heads[leaves[j]])
                i = j + 1
                continue
            while b < i:
                b = next(next_bad)
            found += self._extend(leaves[i:b], lines[i:b], self.pos)
            self.pos += b - i
            i = b
            if b < n:
                self.taint()
        return found

    def taint(self) -> None:
        self.tainted = True
        self.clean_from = None
        self._held = []

    def resync(self, cp: Checkpoint) -> None:
        self.frontier = Frontier(cp.tree_size, cp.frontier)
        self.head = cp.head
        self.pos = cp.tree_size
        self.tainted = False
        self.clean_from = cp.tree_size
        self._held = []
        while self.marks and self.marks[0] <= cp.tree_size:
            self.marks.pop(0)

    def _extend(self, leaves: list[bytes], lines: list[bytes], first: int) -> list[Finding]:
        """Add leaves to the tree, comparing root and head at each checkpoint size."""
        found: list[Finding] = []
        position = first
        offset = 0
        while self.marks and self.marks[0] <= position:
            self.marks.pop(0)
        while offset < len(leaves):
            stop = len(leaves)
            if self.marks and self.marks[0] <= first + len(leaves):
                stop = self.marks[0] - first
            self.frontier.extend(leaves[offset:stop])
            if self.keep_lines:
                self._held += lines[offset:stop]
            position = first + stop
            offset = stop
            if self.marks and self.marks[0] == position:
                self.marks.pop(0)
                found += self._root_matches(position, leaves[stop - 1] if stop else self.head)
        if leaves:
            self.head = leaves[-1]
        return found

    def _root_matches(self, size: int, head: bytes) -> list[Finding]:
        """At a checkpoint's tree_size, its root and head are the tree's (`root-mismatch`)."""
        cp = self.boundaries[size].checkpoint
        found = []
        if self.frontier.root() != cp.root or head != cp.head:
            earlier = [b for b in self.boundaries if b < size]
            found.append(
                self.place.find(
                    "root-mismatch",
                    f"events do not match the Merkle root signed in checkpoint {cp.index}: an "
                    "event was altered, removed or reordered",
                    first_seq=max(earlier, default=0),
                    last_seq=size - 1,
                )
            )
            self.frontier = Frontier(cp.tree_size, cp.frontier)
        elif self.clean_from is not None:
            self.verified += size - self.clean_from
            if self.keep_lines:
                assert self.place.stream is not None and self.place.epoch is not None
                self.accepted.append(
                    AcceptedLines(self.place.stream, self.place.epoch, self.clean_from, self._held)
                )
        self._held = []
        self.clean_from = size
        return found


@dataclass
class EventScan:
    """Reads the segments of one epoch in order and runs the three checks over them."""

    ctx: StreamContext
    notes: Notes
    place: Place
    segs: list[ObjectName]  # sorted by (first, last)
    valid: list[SignedCheckpoint]
    boundaries: dict[int, SignedCheckpoint]
    content: ContentCheck
    keep_lines: bool = False
    observers: dict[str, int] = field(default_factory=dict)
    verified: int = 0  # lines counted in events_verified, once `run` is exhausted

    def run(self) -> Iterator[AcceptedLines]:
        """Check every line; yields the accepted lines when `keep_lines`. Findings go to
        `notes`; the lines counted are `tree.verified` afterwards."""
        place, opt = self.place, self.ctx.options
        assert place.epoch is not None and place.stream is not None
        # --since / --until (FORMAT.md 11.5): start from the frontier and head of the last
        # checkpoint before since, stop at the first checkpoint at or after until.
        start, frontier, head, end = 0, Frontier(), ZERO_HASH, None
        for sc in self.valid:
            cp = sc.checkpoint
            if opt.since_ns is not None and cp.time_ns < opt.since_ns:
                start, frontier, head = cp.tree_size, Frontier(cp.tree_size, cp.frontier), cp.head
            if opt.until_ns is not None and cp.time_ns >= opt.until_ns and end is None:
                end = cp.tree_size
        chain = ChainCheck(place, LineFormat(place.stream.encode(), place.epoch), start, head)
        content = self.content
        content.observers = {}
        tree = TreeCheck(place, self.boundaries, start, frontier, head, self.keep_lines)
        wanted = []
        for seg in self.segs:
            if seg.last < start or seg.last < seg.first:
                continue
            if end is not None and seg.first >= end:
                break
            wanted.append(seg)
        read = self.ctx.read
        for seg, lines in prefetch(
            lambda s: decode_segment(
                read(s.name, MAX_STORED_SEGMENT_BYTES), compressed=s.compressed
            ),
            wanted,
            workers=self.ctx.threads,
        ):
            with self.notes.guard(place, object=seg.name):
                try:
                    self._segment(seg, lines, start, chain, content, tree)
                except Exception:
                    tree.taint()  # this segment's state is unknown: trust the next checkpoint
                    chain.prev = None
                    raise
                finally:
                    self.notes.add(chain.close_run())
            if tree.accepted:
                yield from tree.accepted
                tree.accepted = []
        self.observers = content.observers
        self.verified = tree.verified

    def _segment(
        self,
        seg: ObjectName,
        lines: list[bytes] | Exception,
        start: int,
        chain: ChainCheck,
        content: ContentCheck,
        tree: TreeCheck,
    ) -> None:
        """One segment through the three checks; their findings go to `notes` as they
        come, so an error no rule foresaw later in the segment keeps them."""
        place, add = self.place, self.notes.add
        if isinstance(lines, Exception):
            add(self._unreadable(seg, lines))
            tree.taint()
            chain.prev = None
            return
        if len(lines) != seg.last - seg.first + 1:
            add(
                [
                    place.find(
                        "segment-length",
                        f"holds {len(lines)} lines, its name says {seg.last - seg.first + 1}",
                        object=seg.name,
                        first_seq=seg.first,
                        last_seq=seg.last,
                    )
                ]
            )
        skip = max(0, start - seg.first)
        first = seg.first + skip
        body = lines[skip:] if skip else lines
        if first != chain.seq:  # a gap or overlap in the names (reported with them)
            chain.prev, chain.seq = None, first
        restart = tree.at_segment(first)
        if restart is not None:
            chain.prev = restart.head
        leaves, bad, seqs, broken = chain.lines(body)
        add(broken)
        add(content.lines(place, seg, body, first, seqs))
        add(tree.grow(leaves, bad, body))

    def _unreadable(self, seg: ObjectName, error: Exception) -> list[Finding]:
        """A segment that does not decode (`segment-corrupt`) or cannot be read
        (`object-unreadable`)."""
        code = "object-unreadable"
        if isinstance(error, FormatError | ObjectNotFound | ObjectUnreadable):
            code = "segment-corrupt"
        elif not isinstance(error, DestinationError):
            raise error
        return [
            self.place.find(
                code, str(error), object=seg.name, first_seq=seg.first, last_seq=seg.last
            )
        ]
