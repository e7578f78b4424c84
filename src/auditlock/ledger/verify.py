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

The store is treated as hostile (docs/FORMAT.md section 11, "A hostile store"): every
read is capped at the size FORMAT.md allows for that object (limits.py), every parse is
bounded, and an error nothing foresaw while checking one object becomes a `verify-error`
finding naming it, so one bad object never hides the verdict on the rest.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.abandon import abandon_notes
from auditlock.ledger.checkpoint import Checkpoint, SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import FormatError, KeyFileError, SignatureError
from auditlock.ledger.fetch import prefetch
from auditlock.ledger.keys import key_id, load_public_key, public_pem
from auditlock.ledger.keys import verify as verify_signature
from auditlock.ledger.limits import (
    MAX_CHECKPOINT_BYTES,
    MAX_KEY_BYTES,
    MAX_ROTATION_BYTES,
    MAX_STORED_SEGMENT_BYTES,
)
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
from auditlock.ledger.names import ObjectName, key_name, parse_name
from auditlock.ledger.observer import observer_of_details
from auditlock.ledger.report import Finding, ObjectInfo, StreamSummary, VerifyReport
from auditlock.ledger.rotation import decode_rotation
from auditlock.ledger.segment import decode_segment
from auditlock.ledger.timestamps import format_ns
from auditlock.sinks.base import (
    Destination,
    DestinationError,
    ObjectNotFound,
    ObjectRetention,
    ObjectUnreadable,
)

DEFAULT_SLACK_SECONDS = 30.0
MAX_FINDINGS_PER_STREAM = 100
# Writers compute retain-until from their own clock, stores report write times from
# theirs: tolerate this much disagreement before calling a lock too short.
RETENTION_CLOCK_SKEW_NS = 300 * 1_000_000_000
READ_THREADS = 8  # reads in flight against remote stores (S3, GCS)

# (stream, epoch, first seq, lines): a run of stored lines, positions first..first+n-1 of
# the epoch's tree, whose leaf hashes a signed checkpoint root vouched for with no broken
# line between the checkpoint before it and that one: exactly the lines `events_verified`
# counts. The lines are the stored bytes without their LF.
AcceptedLines = Callable[[str, int, int, list[bytes]], None]


class AcceptedConsumerError(Exception):
    """`on_accepted` failed: the consumer's own error (a full disk, say), never a finding
    about the store; it ends verification and is raised from `verify` as its __cause__."""


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
    # Called with every run of lines verification accepted (AcceptedLines above); the
    # review loader builds its table from these and nothing else.
    on_accepted: AcceptedLines | None = None


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
        self.stored_keys: set[str] = set()  # ids of keys/<id>.pub objects listed
        self.missing_reported: set[tuple[str, str]] = set()  # (stream, key id)

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
                self.stored_keys.add(parsed.key_id)
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
            with self.guard(stream=stream):
                self._verify_stream(stream, streams[stream])
        if self.opt.check_retention:
            self._check_retention(names)
        return self.report

    @contextlib.contextmanager
    def guard(self, **place: object) -> Iterator[None]:
        """Turn an error nothing foresaw into a finding naming the place: a bug, or input
        no rule covers yet, must never take the rest of the report down with it."""
        try:
            yield
        except AcceptedConsumerError:
            raise
        except Exception as exc:
            self._find("verify-error", f"could not be checked: {_describe(exc)}", **place)

    def read(self, name: str, max_bytes: int) -> bytes:
        """An object's bytes, never more than `max_bytes` (what FORMAT.md allows for it)."""
        return self.dest.get(name, max_bytes=max_bytes)

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
            with self.guard(object=obj.name):
                self._load_key(obj)

    def _load_key(self, obj: ObjectName) -> None:
        try:
            data = self.read(obj.name, MAX_KEY_BYTES)
            pub = load_public_key(data)
            if public_pem(pub) != data:  # one stored form: PEM parsers skip text around it
                raise KeyFileError("not exactly the PEM SubjectPublicKeyInfo of its key")
        except (KeyFileError, ObjectNotFound, ObjectUnreadable) as exc:
            self._find("key-corrupt", str(exc), object=obj.name)
            return
        except DestinationError as exc:
            self._find("object-unreadable", str(exc), object=obj.name)
            return
        if key_id(pub) != obj.key_id:
            self._find(
                "key-mismatch",
                f"holds key {key_id(pub)[:16]}…, not the key its name says",
                object=obj.name,
            )
            return
        self.public[obj.key_id] = pub

    def _load_rotations(self, rotations: Iterable[ObjectName]) -> None:
        for obj in rotations:
            with self.guard(object=obj.name):
                self._load_rotation(obj)

    def _load_rotation(self, obj: ObjectName) -> None:
        try:
            record = decode_rotation(self.read(obj.name, MAX_ROTATION_BYTES))
        except (FormatError, ObjectNotFound, ObjectUnreadable) as exc:
            self._find("rotation-corrupt", str(exc), object=obj.name)
            return
        except DestinationError as exc:
            self._find("object-unreadable", str(exc), object=obj.name)
            return
        if (record.old_key_id, record.new_key_id) != (obj.old_key_id, obj.key_id):
            self._find(
                "rotation-mismatch", "record names other keys than its name", object=obj.name
            )
            return
        old = self.public.get(record.old_key_id)
        if old is None:
            self._find("rotation-unverifiable", "the old key is not stored", object=obj.name)
            return
        try:
            record.verify_with(old)
        except SignatureError as exc:
            self._find("rotation-bad-signature", str(exc), object=obj.name)
            return
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
            with self.guard(object=name):
                self._check_lock(name, info, days)

    def _check_lock(self, name: str, info: ObjectRetention | Exception, days: float | None) -> None:
        if isinstance(info, DestinationError):
            # Only a finding when locks were asked for: otherwise an unreadable record
            # (file:// metadata anyone can write) must not fail an intact trail.
            report = self._find if days is not None else self._warn
            report("retention-unreadable", str(info), object=name)
            return
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
            return
        if info.mode is None or until is None:
            self._find("not-locked", "object has no retention lock", object=name)
            return
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
        self.observers: dict[str, int] = {}

    def find(self, code: str, message: str, **place: object) -> None:
        self.v._find(code, message, stream=self.stream, epoch=self.epoch, **place)

    def run(self, summary: StreamSummary) -> None:
        self._checkpoints()
        events = self._events()
        summary.events += events
        for who, count in self.observers.items():
            summary.observers[who] = summary.observers.get(who, 0) + count
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
        read = self.v.read
        loaded = prefetch(
            lambda i: decode_checkpoint(read(names[i], MAX_CHECKPOINT_BYTES)),
            indexes,
            workers=self.v.threads,
        )
        for index, signed in loaded:
            name = names[index]
            with self.v.guard(stream=self.stream, epoch=self.epoch, object=name):
                if isinstance(signed, FormatError | ObjectNotFound | ObjectUnreadable):
                    self.find("checkpoint-corrupt", str(signed), object=name)
                    continue
                if isinstance(signed, DestinationError):
                    self.find("object-unreadable", str(signed), object=name)
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
                self._key_stored(cp.key_id, name)
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
                            "checkpoint-after-close",
                            "stream continues after its close",
                            object=name,
                        )
                    if cp.tree_size < before.tree_size:
                        self.find(
                            "tree-shrank",
                            f"tree size {cp.tree_size} < {before.tree_size}",
                            object=name,
                        )
                    if cp.kind == "heartbeat" and cp.tree_size != before.tree_size:
                        self.find(
                            "heartbeat-grew",
                            f"a heartbeat covers {cp.tree_size} events, the checkpoint before "
                            f"it {before.tree_size}: new events need a seal",
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

    def check_content(
        self, seg: ObjectName, lines: list[bytes], first_seq: int, seqs: list[int] | None
    ) -> None:
        """The per-line content rules (FORMAT.md sections 3 to 5): the one place where each
        stored line's event is looked at, whether or not the line's structure checked out.
        The event is exactly the canonical form of a valid event (line_rules.py), and who
        observed it is counted (observer.py) from the same decoding."""
        v = self.v

        # Name each line by the seq the chain check gave it (after a duplicated or deleted
        # line, the seq it carries rather than its position).
        def at(seq: int) -> int:
            return seq if seqs is None else seqs[seq - first_seq]

        def find(seq: int, code: str, message: str) -> None:
            self.find(code, message, first_seq=at(seq), object=seg.name)

        def warn(seq: int, code: str, message: str) -> None:
            v._warn(code, message, stream=self.stream, epoch=self.epoch, first_seq=at(seq),
                    object=seg.name)  # fmt: skip

        details = v.line_rules.check(
            self.stream, lines, first_seq, len(line_prefix(self.epoch)), find, warn
        )
        tally = self.observers
        for who in map(observer_of_details, details):
            tally[who] = tally.get(who, 0) + 1

    def _key_stored(self, key: str, name: str) -> None:
        """A key that signs checkpoints must be stored beside them (FORMAT.md section 9),
        even when --public-key supplied it: its deletion from the store is tampering."""
        if key in self.v.stored_keys or (self.stream, key) in self.v.missing_reported:
            return
        self.v.missing_reported.add((self.stream, key))
        self.find(
            "key-missing",
            f"key {key[:16]}… signs this checkpoint but {key_name(key)} is not stored "
            "(deleted from the store?)",
            object=name,
        )

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
        return _EventScan(self, segs, boundaries).run_all()

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
    """Hash every line once; check structure, chain and the Merkle roots of checkpoints.

    Two cursors move through the lines (FORMAT.md 11.3.3 and 11.3.4):

    * the chain cursor (`prev`, `seq`) checks each line against the one before it. After
      a broken line it carries on from that line (its hash; its own seq when it names one
      of this epoch), so a duplicated, deleted or spliced line is one finding however
      many lines it shifts, and an unrelated edit further on is still found. Consecutive
      broken lines are one problem: the first is named, the rest counted;
    * the tree cursor (`frontier`, `pos`) adds leaves and compares roots at checkpoint
      sizes. A broken line taints it; it resynchronises at the next checkpoint whose
      `head` is the hash of a line found after the break (by content, so a shifted
      segment resynchronises too), from that checkpoint's frontier.

    A line counts in `events_verified` only once a checkpoint root over it matched with
    no break in between.
    """

    def __init__(
        self, epoch: _EpochState, segs: list[ObjectName], boundaries: dict[int, SignedCheckpoint]
    ) -> None:
        self.e = epoch
        self.segs = segs
        self.boundaries = boundaries
        self.envelope = LineFormat(epoch.stream.encode(), epoch.epoch)
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
        self.heads = {
            sc.checkpoint.head: sc.checkpoint
            for size, sc in boundaries.items()
            if size > self.start
        }
        # chain cursor
        self.prev: bytes | None = self.head
        self.seq = self.start
        self.run: _BrokenRun | None = None
        # tree cursor
        self.pos = self.start
        self.tainted = False
        self.clean_from: int | None = self.start  # leaves from here on are unbroken
        self.verified = 0
        # lines from clean_from on, kept only for on_accepted until a root vouches for them
        self.on_accepted = opt.on_accepted
        self.pending: list[bytes] = []

    def run_all(self) -> int:
        wanted = []
        for seg in self.segs:
            if seg.last < self.start or seg.last < seg.first:
                continue
            if self.end is not None and seg.first >= self.end:
                break
            wanted.append(seg)
        read = self.e.v.read
        for seg, lines in prefetch(
            lambda s: decode_segment(
                read(s.name, MAX_STORED_SEGMENT_BYTES), compressed=s.compressed
            ),
            wanted,
            workers=self.e.v.threads,
        ):
            with self.e.v.guard(stream=self.e.stream, epoch=self.e.epoch, object=seg.name):
                try:
                    self._segment(seg, lines)
                except Exception:
                    self._taint()  # this segment's state is unknown: trust the next checkpoint
                    self.prev = None
                    raise
                finally:
                    self._close_run()
        self.e.v.report.events_verified += self.verified
        return self.verified

    def _segment(self, seg: ObjectName, lines: list[bytes] | Exception) -> None:
        if isinstance(lines, Exception):
            code = "object-unreadable"
            if isinstance(lines, FormatError | ObjectNotFound | ObjectUnreadable):
                code = "segment-corrupt"
            elif not isinstance(lines, DestinationError):
                raise lines
            self.e.find(code, str(lines), object=seg.name, first_seq=seg.first, last_seq=seg.last)
            self._taint()
            self.prev = None
            return
        if len(lines) != seg.last - seg.first + 1:
            self.e.find(
                "segment-length",
                f"holds {len(lines)} lines, its name says {seg.last - seg.first + 1}",
                object=seg.name,
                first_seq=seg.first,
                last_seq=seg.last,
            )
        skip = max(0, self.start - seg.first)
        first = seg.first + skip
        body = lines[skip:] if skip else lines
        if first != self.seq:  # a gap or overlap in the names (reported with them)
            self.prev, self.seq = None, first
        if first != self.pos:
            self._taint()
            self.pos = first
        if self.tainted and first in self.boundaries:
            # After a break, start again from the checkpoint at this segment's start: its
            # frontier for the tree, its head for the chain.
            cp = self.boundaries[first].checkpoint
            self._resync(cp)
            self.prev = cp.head
        leaves, bad, seqs = self._chain(body)
        self.e.check_content(seg, body, first, seqs)
        self._grow(leaves, bad, body)

    # -- the chain cursor -----------------------------------------------------------------

    def _chain(self, body: list[bytes]) -> tuple[list[bytes], list[int], list[int] | None]:
        """Leaf hashes of `body`, the indexes of the lines that break the chain, and the
        seq of each line (None: first + i, as on the fast path)."""
        prev, seq = self.prev, self.seq
        if prev is not None and body:
            # Fast path, in bulk: hash every line, then compare every line's prefix and
            # suffix with the bytes FORMAT.md says they must be. No JSON parsing.
            leaves = leaf_hashes(body)
            expected = self.envelope.suffixes(seq, [prev, *leaves[:-1]])
            prefix = self.envelope.prefix
            if all(map(bytes.endswith, body, expected)) and all(
                line.startswith(prefix) for line in body
            ):
                self.prev, self.seq = leaves[-1], seq + len(body)
                self._close_run()
                return leaves, [], None
        return self._chain_slowly(body)

    def _chain_slowly(self, body: list[bytes]) -> tuple[list[bytes], list[int], list[int]]:
        """Line by line, diagnosing the first line of each broken run."""
        envelope = self.envelope
        prev, seq = self.prev, self.seq
        leaves: list[bytes] = []
        bad: list[int] = []
        seqs: list[int] = []
        for i, line in enumerate(body):
            if prev is None:  # after a gap: accept this line's own prev, check the rest
                named = claimed_prev(line)
                prev = ZERO_HASH if named is None else named
            if envelope.fits(line, seq, prev):
                self._close_run()
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
        return leaves, bad, seqs

    def _close_run(self) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        message = run.message
        if run.consequences:
            after = run.last_seq + 1
            span = f"seq {after}" if after == run.last_bad else f"seqs {after}-{run.last_bad}"
            message += (
                f"; {span} after it ({run.consequences} line(s)) fail as a consequence, "
                "not reported one by one"
            )
        self.e.find(run.code, message, first_seq=run.first_seq, last_seq=run.last_seq)

    def _diagnose(self, line: bytes, seq: int, prev: bytes | None) -> _BrokenRun:
        e = self.e
        try:
            envelope = orjson.loads(line)  # bounded depth and size: see limits.py
            if not isinstance(envelope, dict):
                raise ValueError("not an object")
        except ValueError:
            return _BrokenRun(
                "line-corrupt", "line is not valid JSON (altered or truncated)", seq, seq
            )
        stream, epoch, found = envelope.get("stream"), envelope.get("epoch"), envelope.get("seq")
        if stream != e.stream or epoch != e.epoch:
            return _BrokenRun(
                "foreign-event",
                f"line belongs to stream {_shown(stream)} epoch {_shown(epoch)} (spliced in)",
                seq,
                seq,
            )
        if found != seq:
            return _BrokenRun(
                "seq-mismatch",
                f"found seq {_shown(found)} where {seq} belongs "
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

    # -- the tree cursor ------------------------------------------------------------------

    def _grow(self, leaves: list[bytes], bad: list[int], lines: list[bytes]) -> None:
        """Add the leaves of unbroken lines to the tree; taint it at a broken one; while
        tainted, look for the head of a later checkpoint to resynchronise from."""
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
                    return
                self._resync(heads[leaves[j]])
                i = j + 1
                continue
            while b < i:
                b = next(next_bad)
            self._extend(leaves[i:b], self.pos, lines[i:b])
            self.pos += b - i
            i = b
            if b < n:
                self._taint()

    def _taint(self) -> None:
        self.tainted = True
        self.clean_from = None
        self.pending.clear()

    def _resync(self, cp: Checkpoint) -> None:
        self.frontier = Frontier(cp.tree_size, cp.frontier)
        self.head = cp.head
        self.pos = cp.tree_size
        self.tainted = False
        self.clean_from = cp.tree_size
        self.pending.clear()
        while self.marks and self.marks[0] <= cp.tree_size:
            self.marks.pop(0)

    def _extend(self, leaves: list[bytes], first: int, lines: list[bytes]) -> None:
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
            if self.on_accepted is not None:
                self.pending.extend(lines[offset:stop])
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
        elif self.clean_from is not None:
            self.verified += size - self.clean_from
            if self.on_accepted is not None:
                self._accept(self.clean_from)
        self.pending = []
        self.clean_from = size

    def _accept(self, first: int) -> None:
        assert self.on_accepted is not None
        try:
            self.on_accepted(self.e.stream, self.e.epoch, first, self.pending)
        except Exception as exc:
            raise AcceptedConsumerError(f"on_accepted: {_describe(exc)}") from exc


@dataclass
class _BrokenRun:
    """Consecutive broken lines: the first one's diagnosis, and how many follow it."""

    code: str
    message: str
    first_seq: int
    last_seq: int
    consequences: int = 0  # broken lines right after it
    last_bad: int = 0  # the seq of the last of them


def _describe(exc: BaseException) -> str:
    """An exception as one bounded line: its type and the start of its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def _shown(value: object) -> str:
    """A value from a hostile line, for a message: short scalars only (repr() of a deeply
    nested planted value would recurse, and a huge one would flood the report)."""
    if isinstance(value, str):
        return repr(value[:80]) + ("…" if len(value) > 80 else "")
    if value is None or isinstance(value, bool | int):
        return repr(value)[:40]
    return f"a JSON {type(value).__name__}"


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
