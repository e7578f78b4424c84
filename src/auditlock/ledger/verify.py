"""Offline verification of a ledger (docs/FORMAT.md, "Verification").

`verify(destination, options)` reads every object once and returns a VerifyReport. It
never raises for bad data: corrupt, truncated, misplaced or foreign objects become
findings that name the stream, epoch, sequence range or object, and the reason. Only a
destination that cannot be listed or read at all raises DestinationError.

Speed matters (an auditor verifies millions of events): each line is checked without a
JSON parser. Its prefix and suffix are compared with the bytes FORMAT.md says they must
be (epoch, then prev/seq/stream after the event), its hash is computed once and serves
both the hash chain and the Merkle tree (built level by level per segment). A line is
parsed only when it fails, to say precisely why.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.abandon import abandon_notes
from auditlock.ledger.checkpoint import SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import FormatError, KeyFileError, SignatureError
from auditlock.ledger.fetch import prefetch
from auditlock.ledger.keys import key_id, load_public_key
from auditlock.ledger.keys import verify as verify_signature
from auditlock.ledger.line_rules import LineRules
from auditlock.ledger.lines import ZERO_HASH, line_prefix
from auditlock.ledger.merkle import Frontier
from auditlock.ledger.names import ObjectName, parse_name
from auditlock.ledger.report import Finding, ObjectInfo, StreamSummary, VerifyReport
from auditlock.ledger.rotation import decode_rotation
from auditlock.ledger.segment import decode_segment
from auditlock.ledger.timestamps import format_ns
from auditlock.sinks.base import Destination, DestinationError, ObjectNotFound

DEFAULT_SLACK_SECONDS = 30.0
MAX_FINDINGS_PER_STREAM = 100
# Writers compute retain-until from their own clock, stores report write times from
# theirs: tolerate this much disagreement before calling a lock too short.
RETENTION_CLOCK_SKEW_NS = 300 * 1_000_000_000
READ_THREADS = 8  # reads in flight against remote stores (S3, GCS)


@dataclass
class VerifyOptions:
    public_keys: list[Ed25519PublicKey] = field(default_factory=list)
    since_ns: int | None = None
    until_ns: int | None = None
    now_ns: int | None = None  # "now" for the open-stream staleness check; default: clock
    slack_seconds: float = DEFAULT_SLACK_SECONDS
    require_retention_days: float | None = None
    check_retention: bool = True
    read_threads: int | None = None  # None: 0 for file:// (local), 8 for remote stores


@dataclass
class _Epoch:
    checkpoints: dict[int, str] = field(default_factory=dict)
    segments: list[ObjectName] = field(default_factory=list)


def verify(destination: Destination, options: VerifyOptions | None = None) -> VerifyReport:
    """Verify everything under `destination`; see the module docstring."""
    return _Verifier(destination, options or VerifyOptions()).run()


class _Verifier:
    def __init__(self, destination: Destination, options: VerifyOptions) -> None:
        self.dest = destination
        self.opt = options
        self.report = VerifyReport(url=destination.url)
        self.public: dict[str, Ed25519PublicKey] = {}
        self.edges: dict[str, set[str]] = {}
        self.anchors = {key_id(k) for k in options.public_keys}
        self.object_time: dict[str, int] = {}
        self.now_ns = options.now_ns if options.now_ns is not None else time.time_ns()
        threads = options.read_threads
        if threads is None:
            threads = 0 if destination.url.startswith("file:") else READ_THREADS
        self.threads = threads
        self._stream_findings = 0
        self.line_rules = LineRules()

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> VerifyReport:
        names = list(self.dest.list(""))
        streams: dict[str, dict[int, _Epoch]] = {}
        keys: list[ObjectName] = []
        rotations: list[ObjectName] = []
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
                self._find("unexpected-object", "not a ledger object name (FORMAT.md)", object=name)
            elif parsed.kind == "key":
                keys.append(parsed)
            elif parsed.kind == "rotation":
                rotations.append(parsed)
            else:
                epoch = streams.setdefault(parsed.stream, {}).setdefault(parsed.epoch, _Epoch())
                if parsed.kind == "checkpoint":
                    epoch.checkpoints[parsed.index] = name
                else:
                    epoch.segments.append(parsed)
        if not names:
            self._find("empty", "no ledger objects found at this URL")
        for pub in self.opt.public_keys:
            self.public[key_id(pub)] = pub
        self._load_keys(keys)
        self._load_rotations(rotations)
        if self.anchors:
            self.report.trust = "anchored to --public-key " + ", ".join(
                sorted(k[:16] for k in self.anchors)
            )
        else:
            self.report.trust = (
                "no --public-key given: each stream's first key and its signed rotations, "
                "as stored beside the data (someone able to rewrite the whole store could "
                "forge them; pass --public-key to anchor trust)"
            )
        for stream in sorted(streams):
            self._stream_findings = 0
            self._verify_stream(stream, streams[stream])
        if self.opt.check_retention:
            self._check_retention(names)
        return self.report

    def _find(self, code: str, message: str, **place: object) -> None:
        if place.get("stream") is not None:
            self._stream_findings += 1
            if self._stream_findings == MAX_FINDINGS_PER_STREAM + 1:
                message = "too many problems in this stream; the rest are not listed"
                code = "truncated-report"
            elif self._stream_findings > MAX_FINDINGS_PER_STREAM + 1:
                return
        self.report.findings.append(Finding(code, message, **place))  # type: ignore[arg-type]

    def _warn(self, code: str, message: str, **place: object) -> None:
        self.report.warnings.append(Finding(code, message, **place))  # type: ignore[arg-type]

    # -- keys -----------------------------------------------------------------------------

    def _load_keys(self, keys: Iterable[ObjectName]) -> None:
        for obj in keys:
            try:
                pub = load_public_key(self.dest.get(obj.name))
            except (KeyFileError, ObjectNotFound) as exc:
                self._find("key-corrupt", str(exc), object=obj.name)
                continue
            if key_id(pub) != obj.key_id:
                self._find(
                    "key-mismatch",
                    f"holds key {key_id(pub)[:16]}…, not the key its name says",
                    object=obj.name,
                )
                continue
            self.public[obj.key_id] = pub

    def _load_rotations(self, rotations: Iterable[ObjectName]) -> None:
        for obj in rotations:
            try:
                record = decode_rotation(self.dest.get(obj.name))
            except (FormatError, ObjectNotFound) as exc:
                self._find("rotation-corrupt", str(exc), object=obj.name)
                continue
            if (record.old_key_id, record.new_key_id) != (obj.old_key_id, obj.key_id):
                self._find(
                    "rotation-mismatch", "record names other keys than its name", object=obj.name
                )
                continue
            old = self.public.get(record.old_key_id)
            if old is None:
                self._find("rotation-unverifiable", "the old key is not stored", object=obj.name)
                continue
            try:
                record.verify_with(old)
            except SignatureError as exc:
                self._find("rotation-bad-signature", str(exc), object=obj.name)
                continue
            self.public.setdefault(record.new_key_id, record.new_public)
            self.edges.setdefault(record.old_key_id, set()).add(record.new_key_id)

    def _closure(self, start: set[str]) -> set[str]:
        seen = set(start)
        queue = deque(start)
        while queue:
            for nxt in self.edges.get(queue.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    # -- streams --------------------------------------------------------------------------

    def _verify_stream(self, stream: str, epochs: dict[int, _Epoch]) -> None:
        summary = StreamSummary(stream=stream, epochs=len(epochs))
        self.report.streams.append(summary)
        numbers = sorted(epochs)
        missing = _holes(numbers)
        if missing:
            self._find("epoch-missing", f"epochs {missing} have no objects", stream=stream)
        allowed: set[str] | None = self._closure(self.anchors) if self.anchors else None
        incoming = ZERO_HASH
        last_time: int | None = None
        for number in numbers:
            is_last = number == numbers[-1]
            state = _EpochState(self, stream, number, epochs[number], incoming, allowed, is_last)
            state.run(summary)
            if allowed is None and state.first_key is not None:
                allowed = self._closure({state.first_key})
            if state.valid and last_time is not None:
                first = state.valid[0].checkpoint
                self._warn(
                    "restart",
                    f"new epoch after a restart: no checkpoints from {format_ns(last_time)} "
                    f"to {first.time}",
                    stream=stream,
                    epoch=number,
                )
            if state.valid:
                last_time = state.valid[-1].checkpoint.time_ns
            incoming = state.last_digest

    # -- retention ------------------------------------------------------------------------

    def _check_retention(self, names: list[str]) -> None:
        days = self.opt.require_retention_days
        for name, info in prefetch(self.dest.retention, names, workers=self.threads):
            if isinstance(info, DestinationError):
                # Only --require-retention makes the lock part of the verdict.
                report = self._find if days is not None else self._warn
                report("retention-unreadable", str(info), object=name)
                continue
            if isinstance(info, Exception):
                raise info
            until = info.retain_until
            self.report.objects.append(
                ObjectInfo(
                    name=name,
                    mode=info.mode.value if info.mode else None,
                    retain_until=until.isoformat() if until else None,
                    legal_hold=info.legal_hold,
                )
            )
            if days is None or info.legal_hold:
                continue
            if info.mode is None or until is None:
                self._find("not-locked", "object has no retention lock", object=name)
                continue
            # "Written" is when the store says it wrote the object (the lock started then);
            # a store that does not say: the signed time of the checkpoint that covers the
            # object; failing both, now.
            if info.written_at is not None:
                written = int(info.written_at.astimezone(UTC).timestamp() * 1e9)
            else:
                written = self.object_time.get(name, self.now_ns)
            needed = written + int(days * 86400 * 1e9) - RETENTION_CLOCK_SKEW_NS
            until_ns = int(until.astimezone(UTC).timestamp() * 1e9)
            if until_ns < needed:
                self._find(
                    "retention-short",
                    f"locked until {until.isoformat()}, less than {days:g} days after "
                    f"{format_ns(written)}",
                    object=name,
                )


class _EpochState:
    """Verification of one epoch of one stream: checkpoints first, then events."""

    def __init__(
        self,
        v: _Verifier,
        stream: str,
        epoch: int,
        objects: _Epoch,
        incoming: bytes,
        allowed: set[str] | None,
        is_last: bool,
    ) -> None:
        self.v = v
        self.stream = stream
        self.epoch = epoch
        self.objects = objects
        self.incoming = incoming
        self.allowed = allowed
        self.is_last = is_last
        self.valid: list[SignedCheckpoint] = []
        self.first_key: str | None = None
        self.last_digest = ZERO_HASH

    def find(self, code: str, message: str, **place: object) -> None:
        self.v._find(code, message, stream=self.stream, epoch=self.epoch, **place)

    def run(self, summary: StreamSummary) -> None:
        self._checkpoints()
        events = self._events()
        summary.events += events
        summary.checkpoints += len(self.valid)
        for sc in self.valid:
            if sc.checkpoint.key_id not in summary.key_ids:
                summary.key_ids.append(sc.checkpoint.key_id)
        if self.valid:
            if summary.first_checkpoint_time is None:
                summary.first_checkpoint_time = self.valid[0].checkpoint.time
            summary.last_checkpoint_time = self.valid[-1].checkpoint.time
            summary.closed = self.valid[-1].checkpoint.kind == "close"
            summary.abandoned = self.valid[-1].checkpoint.abandoned
        self.v.report.checkpoints_verified += len(self.valid)

    # -- checkpoints ----------------------------------------------------------------------

    def _checkpoints(self) -> None:
        names = self.objects.checkpoints
        if not names:
            self.find("no-checkpoint", "epoch has segments but no checkpoint")
            return
        indexes = sorted(names)
        gaps = _holes(indexes)
        if gaps:
            self.find("checkpoint-missing", f"checkpoints {gaps} are missing")
        digests: dict[int, bytes] = {}
        since, until = self.v.opt.since_ns, self.v.opt.until_ns
        slack_ns = int(self.v.opt.slack_seconds * 1e9)
        last: SignedCheckpoint | None = None
        get = self.v.dest.get
        loaded = prefetch(
            lambda i: decode_checkpoint(get(names[i])), indexes, workers=self.v.threads
        )
        for index, signed in loaded:
            name = names[index]
            if isinstance(signed, FormatError | ObjectNotFound):
                self.find("checkpoint-corrupt", str(signed), object=name)
                continue
            if isinstance(signed, Exception):
                raise signed
            cp = signed.checkpoint
            if (cp.stream, cp.epoch, cp.index) != (self.stream, self.epoch, index):
                self.find(
                    "checkpoint-misplaced",
                    f"holds checkpoint {cp.index} of stream {cp.stream} epoch {cp.epoch} "
                    "(copied or rolled back)",
                    object=name,
                )
                continue
            digests[index] = signed.digest
            if index == indexes[-1]:
                self.last_digest = signed.digest
            if self.first_key is None and self.allowed is None:
                self.first_key = cp.key_id
                self.allowed = self.v._closure({cp.key_id})
            if self.allowed is not None and cp.key_id not in self.allowed:
                self.find(
                    "unknown-key",
                    f"signed by key {cp.key_id[:16]}…, which is not trusted for this stream "
                    "(not a --public-key, nor reached from one by a signed rotation)",
                    object=name,
                )
                continue
            public = self.v.public.get(cp.key_id)
            if public is None:
                self.find("key-missing", f"key {cp.key_id[:16]}… is not stored", object=name)
                continue
            try:
                verify_signature(public, signed.signature, signed.body, name)
            except SignatureError:
                self.find("bad-signature", "signature does not verify", object=name)
                continue
            expected = self.incoming if index == 0 else digests.get(index - 1)
            if expected is not None and cp.prev != expected:
                what = (
                    "the last checkpoint of the previous epoch"
                    if index == 0
                    else f"checkpoint {index - 1}"
                )
                self.find(
                    "checkpoint-chain-broken",
                    f"prev does not match {what} (replaced, removed or forked)",
                    object=name,
                )
            if last is not None:
                before = last.checkpoint
                if before.closed:
                    self.find(
                        "checkpoint-after-close", "stream continues after its close", object=name
                    )
                if cp.tree_size < before.tree_size:
                    self.find(
                        "tree-shrank", f"tree size {cp.tree_size} < {before.tree_size}", object=name
                    )
                if cp.kind == "heartbeat" and cp.tree_size != before.tree_size:
                    self.find(
                        "heartbeat-grew",
                        f"a heartbeat covers {cp.tree_size} events, the checkpoint before it "
                        f"{before.tree_size}: new events need a seal",
                        object=name,
                    )
                if cp.time_ns < before.time_ns:
                    self.find(
                        "time-backwards", f"time {cp.time} is before {before.time}", object=name
                    )
                in_window = (since is None or cp.time_ns >= since) and (
                    until is None or before.time_ns <= until
                )
                allowed_gap = before.heartbeat_ms * 1_000_000 + slack_ns
                late = in_window and cp.time_ns - before.time_ns > allowed_gap
                if cp.abandoned:
                    self.v.report.warnings.extend(abandon_notes(before, cp, name))
                elif late and cp.kind == "resume":
                    self.v._warn(
                        "restart",
                        f"writer restarted: no checkpoints from {before.time} to {cp.time}",
                        stream=self.stream,
                        epoch=self.epoch,
                        object=name,
                    )
                elif late:
                    gap_s = (cp.time_ns - before.time_ns) / 1e9
                    self.find(
                        "time-gap",
                        f"no checkpoint from {before.time} to {cp.time} ({gap_s:.0f} s; the "
                        f"writer promised one every {before.heartbeat_ms / 1000:g} s): "
                        "checkpoints were deleted or the writer stalled",
                        first_seq=before.tree_size,
                        last_seq=max(cp.tree_size - 1, before.tree_size),
                        object=name,
                    )
            self.v.object_time[name] = cp.time_ns
            self.valid.append(signed)
            last = signed

    # -- events ---------------------------------------------------------------------------

    def _events(self) -> int:
        segs = sorted(self.objects.segments, key=lambda s: (s.first, s.last))
        stored = self._segment_names(segs)
        boundaries: dict[int, SignedCheckpoint] = {}
        for sc in self.valid:
            cp = sc.checkpoint
            seen = boundaries.setdefault(cp.tree_size, sc)
            if seen is not sc and (seen.checkpoint.root, seen.checkpoint.head) != (
                cp.root,
                cp.head,
            ):
                self.find(
                    "checkpoint-fork",
                    f"checkpoints {seen.checkpoint.index} and {cp.index} disagree about the "
                    f"first {cp.tree_size} events",
                )
        covered = max((sc.checkpoint.tree_size for sc in self.valid), default=0)
        # A segment's signed time is that of the first checkpoint covering it.
        by_size = sorted(self.valid, key=lambda sc: (sc.checkpoint.tree_size, sc.checkpoint.index))
        j = 0
        for seg in sorted(segs, key=lambda s: s.last):
            while j < len(by_size) and by_size[j].checkpoint.tree_size <= seg.last:
                j += 1
            if j < len(by_size):
                self.v.object_time.setdefault(seg.name, by_size[j].checkpoint.time_ns)
        if covered > stored:
            self.find(
                "events-missing",
                f"checkpoints cover {covered} events but segments hold only {stored} "
                "(tail segments deleted?)",
                first_seq=stored,
                last_seq=covered - 1,
            )
        closed = bool(self.valid) and self.valid[-1].checkpoint.closed
        if stored > covered:
            if closed or not self.is_last:
                self.find(
                    "unsigned-events",
                    "events stored after the last checkpoint of a finished epoch: no "
                    "checkpoint vouches for them",
                    first_seq=covered,
                    last_seq=stored - 1,
                )
            else:
                self.v._warn(
                    "unsigned-events",
                    "not yet covered by a checkpoint (in flight, or the writer stopped)",
                    stream=self.stream,
                    epoch=self.epoch,
                    first_seq=covered,
                    last_seq=stored - 1,
                )
        if self.is_last and self.valid and not closed:
            last = self.valid[-1].checkpoint
            now = self.v.opt.until_ns if self.v.opt.until_ns is not None else self.v.now_ns
            allowed = last.heartbeat_ms * 1_000_000 + int(self.v.opt.slack_seconds * 1e9)
            if now - last.time_ns > allowed:
                self.find(
                    "stream-stale",
                    f"stream is open and its last checkpoint is from {last.time} "
                    f"({(now - last.time_ns) / 1e9:.0f} s before {format_ns(now)}; heartbeat "
                    f"every {last.heartbeat_ms / 1000:g} s): the tail was truncated or rolled "
                    "back, or the writer stopped without closing",
                    first_seq=last.tree_size,
                )
        return _EventScan(self, segs, boundaries).run()

    def _segment_names(self, segs: list[ObjectName]) -> int:
        """Check the segment names tile 0..n-1; return n (the events stored)."""
        expected = 0
        for seg in segs:
            if seg.last < seg.first:
                self.find("segment-name", "last seq is before first seq", object=seg.name)
                continue
            if seg.first > expected:
                self.find(
                    "events-missing",
                    "no segment holds these events (segment deleted?)",
                    first_seq=expected,
                    last_seq=seg.first - 1,
                )
            elif seg.first < expected:
                self.find(
                    "segment-overlap",
                    f"overlaps seqs {seg.first}-{min(seg.last, expected - 1)} already stored "
                    "in another segment (duplicated segment?)",
                    object=seg.name,
                )
            expected = max(expected, seg.last + 1)
        return expected


class _EventScan:
    """Hash every line once; check structure, chain and the Merkle roots of checkpoints."""

    def __init__(
        self, epoch: _EpochState, segs: list[ObjectName], boundaries: dict[int, SignedCheckpoint]
    ) -> None:
        self.e = epoch
        self.segs = segs
        self.boundaries = boundaries
        self.stream_b = epoch.stream.encode()
        self.prefix = line_prefix(epoch.epoch)
        opt = epoch.v.opt
        self.start = 0
        self.frontier = Frontier()
        self.head = ZERO_HASH
        self.end: int | None = None
        for sc in epoch.valid:
            cp = sc.checkpoint
            if opt.since_ns is not None and cp.time_ns < opt.since_ns:
                self.start = cp.tree_size
                self.frontier = Frontier(cp.tree_size, cp.frontier)
                self.head = cp.head
            if opt.until_ns is not None and cp.time_ns >= opt.until_ns and self.end is None:
                self.end = cp.tree_size
        self.marks = sorted(b for b in boundaries if b > self.start)

    def run(self) -> int:
        events = 0
        prev: bytes | None = self.head
        tainted = False
        wanted = []
        for seg in self.segs:
            if seg.last < self.start or seg.last < seg.first:
                continue
            if self.end is not None and seg.first >= self.end:
                break
            wanted.append(seg)
        get = self.e.v.dest.get
        for seg, lines in prefetch(
            lambda s: decode_segment(get(s.name), compressed=s.compressed),
            wanted,
            workers=self.e.v.threads,
        ):
            if isinstance(lines, Exception) and not isinstance(lines, FormatError | ObjectNotFound):
                raise lines
            if isinstance(lines, Exception):
                self.e.find(
                    "segment-corrupt",
                    str(lines),
                    object=seg.name,
                    first_seq=seg.first,
                    last_seq=seg.last,
                )
                tainted, prev = True, None
                continue
            if len(lines) != seg.last - seg.first + 1:
                self.e.find(
                    "segment-length",
                    f"holds {len(lines)} lines, its name says {seg.last - seg.first + 1}",
                    object=seg.name,
                    first_seq=seg.first,
                    last_seq=seg.last,
                )
            skip = max(0, self.start - seg.first)
            if seg.first + skip != self.frontier.size:
                tainted, prev = True, None  # gap or overlap (already reported by names)
            leaves, prev, bad = self._scan(lines, skip, seg.first + skip, prev)
            self._check_events(seg, lines[skip:] if skip else lines, seg.first + skip)
            events += len(lines) - skip
            if bad:
                tainted = True
            if not tainted:
                self._extend(leaves, seg.first + skip)
            end = seg.first + len(lines)
            if tainted and end - 1 == seg.last and seg.last + 1 in self.boundaries:
                # Resynchronise from the signed checkpoint at this segment's end.
                cp = self.boundaries[seg.last + 1].checkpoint
                self.frontier = Frontier(cp.tree_size, cp.frontier)
                self.head = prev = cp.head
                tainted = False
        self.e.v.report.events_verified += events
        return events

    def _check_events(self, seg: ObjectName, lines: list[bytes], first: int) -> None:
        """The event inside each line is exactly the canonical form of a valid event."""
        e = self.e

        def find(seq: int, code: str, message: str) -> None:
            e.find(code, message, first_seq=seq, object=seg.name)

        def warn(seq: int, code: str, message: str) -> None:
            e.v._warn(code, message, stream=e.stream, epoch=e.epoch, first_seq=seq, object=seg.name)

        e.v.line_rules.check(e.stream, lines, first, len(self.prefix), find, warn)

    def _scan(
        self, lines: list[bytes], skip: int, seq: int, prev: bytes | None
    ) -> tuple[list[bytes], bytes | None, int]:
        """Leaf hashes of lines[skip:]; report broken lines; returns (leaves, prev, #bad)."""
        body = lines[skip:] if skip else lines
        if prev is not None and body:
            # Fast path, in bulk: hash every line, then compare every line's prefix and
            # suffix with the bytes FORMAT.md says they must be. No JSON parsing.
            sha = hashlib.sha256
            leaves = [sha(b"\x00" + line).digest() for line in body]
            hexes = binascii.hexlify(b"".join([prev, *leaves[:-1]]))
            form = b',"prev":"%b","seq":%d,"stream":"' + self.stream_b + b'"}'
            expected = [form % (hexes[i * 64 : i * 64 + 64], seq + i) for i in range(len(body))]
            prefix = self.prefix
            if all(map(bytes.endswith, body, expected)) and all(
                line.startswith(prefix) for line in body
            ):
                return leaves, leaves[-1], 0
        return self._scan_slowly(lines, skip, seq, prev)

    def _scan_slowly(
        self, lines: list[bytes], skip: int, seq: int, prev: bytes | None
    ) -> tuple[list[bytes], bytes | None, int]:
        """Line by line, diagnosing each broken line and resynchronising after it."""
        sha = hashlib.sha256
        hexlify = binascii.hexlify
        prefix = self.prefix
        stream_b = self.stream_b
        leaves: list[bytes] = []
        bad = 0
        for line in lines[skip:]:
            if prev is None:  # after a gap: accept this line's own prev, check the rest
                prev = _claimed_prev(line)
            suffix = b',"prev":"%b","seq":%d,"stream":"%b"}' % (hexlify(prev), seq, stream_b)
            if not (line.startswith(prefix) and line.endswith(suffix)):
                bad += 1
                self._diagnose(line, seq, prev)
            prev = sha(b"\x00" + line).digest()
            leaves.append(prev)
            seq += 1
        return leaves, prev, bad

    def _diagnose(self, line: bytes, seq: int, prev: bytes | None) -> None:
        e = self.e
        try:
            envelope = json.loads(line)
            if not isinstance(envelope, dict):
                raise ValueError("not an object")
        except ValueError:
            e.find("line-corrupt", "line is not valid JSON (altered or truncated)", first_seq=seq)
            return
        if envelope.get("stream") != e.stream or envelope.get("epoch") != e.epoch:
            e.find(
                "foreign-event",
                f"line belongs to stream {envelope.get('stream')!r} epoch "
                f"{envelope.get('epoch')!r} (spliced in)",
                first_seq=seq,
            )
        elif envelope.get("seq") != seq:
            e.find(
                "seq-mismatch",
                f"found seq {envelope.get('seq')!r} where {seq} belongs "
                "(events deleted, duplicated or reordered)",
                first_seq=seq,
            )
        elif prev is not None and envelope.get("prev") != prev.hex():
            e.find(
                "chain-broken",
                f"prev does not match the hash of seq {seq - 1}: an event was altered, "
                "removed or replaced",
                first_seq=max(seq - 1, 0),
                last_seq=seq,
            )
        else:
            e.find("line-not-canonical", "line is not in the canonical form", first_seq=seq)

    def _extend(self, leaves: list[bytes], first: int) -> None:
        """Add leaves to the tree, comparing root and head at each checkpoint size."""
        position = first
        offset = 0
        while self.marks and self.marks[0] <= position:
            self.marks.pop(0)
        while offset < len(leaves):
            stop = len(leaves)
            if self.marks and self.marks[0] <= first + len(leaves):
                stop = self.marks[0] - first
            self.frontier.extend(leaves[offset:stop])
            position = first + stop
            offset = stop
            if self.marks and self.marks[0] == position:
                self.marks.pop(0)
                self._check_boundary(position, leaves[stop - 1] if stop else self.head)
        if leaves:
            self.head = leaves[-1]

    def _check_boundary(self, size: int, head: bytes) -> None:
        cp = self.boundaries[size].checkpoint
        if self.frontier.root() != cp.root or head != cp.head:
            earlier = [b for b in self.boundaries if b < size]
            self.e.find(
                "root-mismatch",
                f"events do not match the Merkle root signed in checkpoint {cp.index}: an "
                "event was altered, removed or reordered",
                first_seq=max(earlier, default=0),
                last_seq=size - 1,
            )
            self.frontier = Frontier(cp.tree_size, cp.frontier)


def _claimed_prev(line: bytes) -> bytes:
    marker = line.rfind(b',"prev":"')
    try:
        return bytes.fromhex(line[marker + 9 : marker + 73].decode())
    except (ValueError, UnicodeDecodeError):
        return ZERO_HASH


def _holes(present: list[int]) -> str:
    """The numbers missing from 0..max(present) as ranges ("3, 5-9"); "" if none.

    Works from the sorted list, never materialising 0..max: a corrupt or planted name
    may carry a huge number."""
    out: list[str] = []
    expected = 0
    for n in present:
        if n > expected:
            out.append(str(expected) if n - 1 == expected else f"{expected}-{n - 1}")
        expected = max(expected, n + 1)
    return ", ".join(out)


def parse_time_option(text: str) -> int:
    """--since/--until: RFC 3339 (any offset) -> ns since the Unix epoch; ValueError if bad."""
    from auditlock.ledger.timestamps import normalize_time, parse_ns

    return parse_ns(normalize_time(text))
