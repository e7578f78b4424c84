"""StreamWriter: builds one stream's ledger (docs/FORMAT.md, "Writing and resuming").

The pipeline is split so uploads can overlap:

* `append(event)` (pure CPU): canonical bytes; returns the event's seq. `extend(events)`
  does the same for a batch with one encoder call (what a caller holding many events uses).
* `seal()` (pure CPU): builds the lines of the appended events and their hash chain
  (lines.py, in one pass), cuts segments and signs a checkpoint over them; returns
  `PendingObject`s (name, bytes, covered seqs). No I/O.
* `store(objects)` (I/O, may run in a worker thread): puts them, idempotently. Several
  sealed batches may be storing at once; segments land in any order, but checkpoints are
  put strictly in index order (a checkpoint waits briefly for its predecessor, then
  stores the predecessor's batch itself), so the stored checkpoints are always a gapless
  prefix and each covers stored segments.

Exactly-once after a crash: line bytes are a pure function of (event, seq, prev), segment
bytes a pure function of their lines. `resume` reads the destination, continues the chain
from the last checkpoint and ADOPTS contiguous segments stored after it; `next_seq` then
says which seq the caller must feed next (everything before it is stored). Segments found
after a gap (a batch that was uploading when the crash hit) are remembered, and `seal`
cuts at their boundaries so re-fed events reproduce them byte for byte (the put is then
an idempotent no-op). When the tail cannot be continued (closed, corrupt, inconsistent),
`resume` starts a new epoch whose genesis checkpoint commits to the old epoch's last one.

`append`/`seal`/`heartbeat`/`close` belong to one thread; `store` is thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlock.ledger.build_hash import node_pairs
from auditlock.ledger.canonical import canonical_batch
from auditlock.ledger.checkpoint import (
    MIN_HEARTBEAT_MS,
    Checkpoint,
    encode_checkpoint,
)
from auditlock.ledger.errors import LedgerError, StoreError
from auditlock.ledger.keys import Signer, public_pem
from auditlock.ledger.limits import MAX_EVENT_BYTES, MAX_SEGMENT_BYTES
from auditlock.ledger.lines import ZERO_HASH, LineFormat
from auditlock.ledger.merkle import Frontier
from auditlock.ledger.names import (
    MAX_SEQ,
    check_stream_id,
    checkpoint_name,
    key_name,
    rotation_name,
    segment_name,
)
from auditlock.ledger.segment import encode_segment
from auditlock.ledger.timestamps import format_ns
from auditlock.sinks.base import Destination, RetentionSpec

log = logging.getLogger(__name__)

_sha256 = hashlib.sha256
_dumps = orjson.dumps
_SORT = orjson.OPT_SORT_KEYS


@dataclass(frozen=True)
class PendingObject:
    """One object to store. Segments cover seqs first_seq..last_seq of `epoch`;
    checkpoints cover 0..last_seq (last_seq is None for an empty tree)."""

    name: str
    data: bytes
    kind: str  # "key", "segment" or "checkpoint"
    epoch: int
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoint_index: int | None = None


class ClosedStreamError(LedgerError):
    """append/seal after close()."""


class StreamWriter:
    """The writer of one stream (one source instance). Create it with `resume`."""

    def __init__(
        self,
        destination: Destination,
        stream_id: str,
        signer: Signer,
        *,
        epoch: int,
        retention: RetentionSpec | None,
        heartbeat_seconds: float,
        clock: Callable[[], int],
        compress: bool,
        frontier: Frontier,
        head: bytes,
        checkpoint_index: int,
        checkpoint_digest: bytes,
        checkpoint_time_ns: int,
        need_genesis: bool,
    ) -> None:
        self.destination = destination
        self.stream_id = check_stream_id(stream_id)
        self._stream_b = stream_id.encode()
        self.signer = signer
        self.key_id = signer.key_id
        self.epoch = epoch
        self.retention = retention
        # FORMAT.md's lower bound; a shorter interval would only add checkpoints.
        self.heartbeat_ms = max(MIN_HEARTBEAT_MS, round(heartbeat_seconds * 1000))
        self._clock = clock
        self.compress = compress
        self._frontier = frontier
        self._head = head  # hash of the last sealed line (the tree's last leaf)
        self._prev = head  # hash of the last line built
        self.next_seq = frontier.size
        self.resumed_seq = frontier.size  # seqs below this are stored: do not feed them
        self._pending_first = frontier.size
        self._events: list[bytes] = []  # appended, not yet built into lines
        self._lines: list[bytes] = []  # built, not yet cut into segments
        self._leaves: list[bytes] = []
        self._checkpoint_index = checkpoint_index
        self._checkpoint_digest = checkpoint_digest
        self._checkpoint_time_ns = checkpoint_time_ns
        self._need_genesis = need_genesis
        self._need_checkpoint = False
        self._resumed = not need_genesis  # continuing a stored epoch after a restart
        self._key_pending = True
        self._reserved: list[tuple[int, int]] = []  # orphan segments found after a gap
        self.closed = False
        self._format = LineFormat(self._stream_b, epoch)
        self._stored_lock = threading.Condition()
        self._sealed: dict[int, list[PendingObject]] = {}  # unstored checkpoint -> its batch
        self._stored_index = -1 if need_genesis else checkpoint_index

    # -- construction --------------------------------------------------------------------

    @classmethod
    def resume(
        cls,
        destination: Destination,
        stream_id: str,
        signing_key: Ed25519PrivateKey | Signer,
        *,
        retention: RetentionSpec | None,
        heartbeat_seconds: float = 60.0,
        clock: Callable[[], int] = time.time_ns,
        compress: bool = False,
    ) -> StreamWriter:
        """Open `stream_id` on `destination`: continue its chain if the tail is intact
        (adopting segments stored after the last checkpoint), else start a new epoch."""
        from auditlock.ledger.resume import plan_resume

        signer = signing_key if isinstance(signing_key, Signer) else Signer(signing_key)
        check_stream_id(stream_id)
        plan = plan_resume(destination, stream_id, signer)
        writer = cls(
            destination,
            stream_id,
            signer,
            epoch=plan.epoch,
            retention=retention,
            heartbeat_seconds=heartbeat_seconds,
            clock=clock,
            compress=compress,
            frontier=plan.frontier,
            head=plan.head,
            checkpoint_index=plan.checkpoint_index,
            checkpoint_digest=plan.checkpoint_digest,
            checkpoint_time_ns=plan.checkpoint_time_ns,
            need_genesis=plan.need_genesis,
        )
        writer._need_checkpoint = plan.adopted > 0
        writer._reserved = plan.reserved
        if plan.previous_key_id and plan.previous_key_id != signer.key_id:
            rotation = rotation_name(plan.previous_key_id, signer.key_id)
            if rotation not in set(destination.list("keys/rotations/")):
                log.warning(
                    "stream %s was signed by key %s and continues with key %s, but no "
                    "rotation record %s exists: verify will report the new key as unknown",
                    stream_id, plan.previous_key_id[:16], signer.key_id[:16], rotation,
                )  # fmt: skip
        log.info(
            "stream %s: %s epoch %d at seq %d (adopted %d stored events)",
            stream_id, "new" if plan.need_genesis else "continuing", plan.epoch,
            writer.next_seq, plan.adopted,
        )  # fmt: skip
        return writer

    # -- the hot path --------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> int:
        """Add a normalized event (see normalize_event); return its seq. Pure CPU."""
        canonical = _dumps(event, option=_SORT)
        if self.closed or len(canonical) > MAX_EVENT_BYTES or self.next_seq >= MAX_SEQ:
            return self.append_canonical(canonical)  # raises, with the reason
        seq = self.next_seq
        self._events.append(canonical)
        self.next_seq = seq + 1
        return seq

    def extend(self, events: list[dict[str, Any]]) -> None:
        """`append` for each of `events` (normalized events), encoded in one call, which
        costs much less per event than appending them one by one; the lines are the same.

        All or nothing: if the stream is closed (ClosedStreamError), an event is larger
        than FORMAT.md allows or the epoch has no seq left for the whole batch (LedgerError,
        as `append` raises them), nothing is appended."""
        if self.closed:
            raise ClosedStreamError(f"stream {self.stream_id} is closed")
        if not events:
            return
        canonical, total = canonical_batch(events)
        if total > MAX_EVENT_BYTES:  # only then can one of them be too large
            for index, event in enumerate(canonical):
                if len(event) > MAX_EVENT_BYTES:
                    raise LedgerError(
                        f"event {index} of the batch is {len(event)} bytes, more than "
                        f"{MAX_EVENT_BYTES}"
                    )
        seq = self.next_seq
        if seq + len(canonical) > MAX_SEQ:
            raise LedgerError(f"stream {self.stream_id} epoch {self.epoch} is full")
        self._events.extend(canonical)
        self.next_seq = seq + len(canonical)

    def append_canonical(self, event: bytes) -> int:
        """Add an event given as its canonical (RFC 8785) bytes; return its seq.

        An event larger than FORMAT.md allows (limits.MAX_EVENT_BYTES) raises LedgerError
        and changes nothing: intake refuses such events before they are acknowledged."""
        if self.closed:
            raise ClosedStreamError(f"stream {self.stream_id} is closed")
        if len(event) > MAX_EVENT_BYTES:
            raise LedgerError(f"event is {len(event)} bytes, more than {MAX_EVENT_BYTES}")
        seq = self.next_seq
        self._events.append(event)
        self.next_seq = seq + 1
        if seq >= MAX_SEQ:
            raise LedgerError(f"stream {self.stream_id} epoch {self.epoch} is full")
        return seq

    def extend_canonical(self, events: Sequence[bytes]) -> None:
        """`append_canonical` for each of `events`, in one step when none can fail (the
        collector appends a spool record's events at once)."""
        seq = self.next_seq
        if (
            self.closed
            or not events
            or seq + len(events) > MAX_SEQ
            or max(map(len, events)) > MAX_EVENT_BYTES
        ):
            for event in events:
                self.append_canonical(event)  # raises at the first it refuses, as one by one
            return
        self._events.extend(events)
        self.next_seq = seq + len(events)

    @property
    def pending_events(self) -> int:
        """Appended events not yet sealed."""
        return len(self._events) + len(self._lines)

    # -- sealing (pure CPU) --------------------------------------------------------------

    def seal(self) -> list[PendingObject]:
        """Cut segments from appended events and sign a checkpoint over them. No I/O.

        May hold back events that belong to a segment found after a crash until all of
        its seqs are appended (see module docstring)."""
        return self._remember(self._seal())

    def _seal(self) -> list[PendingObject]:
        if self.closed:
            raise ClosedStreamError(f"stream {self.stream_id} is closed")
        objects = self._preamble()
        segments = self._cut_segments()
        objects.extend(segments)
        if segments or self._need_checkpoint:
            objects.append(self._checkpoint("seal"))
        return objects

    def heartbeat_due(self, now: int | None = None) -> bool:
        """True when a checkpoint is owed: `now` (ns since the Unix epoch, default the
        writer's clock) is a heartbeat interval past the last checkpoint, or the stream
        was just opened or adopted events that no checkpoint covers yet."""
        if self.closed:
            return False
        if self._need_genesis or self._need_checkpoint or self._key_pending:
            return True
        now = self._clock() if now is None else now
        return now - self._checkpoint_time_ns >= self.heartbeat_ms * 1_000_000

    def heartbeat(self) -> list[PendingObject]:
        """A checkpoint now, sealing any appended events first."""
        objects = self._seal()
        if not any(o.kind == "checkpoint" for o in objects):
            objects.append(self._checkpoint("heartbeat"))
        return self._remember(objects)

    def close(self) -> list[PendingObject]:
        """Seal everything and write the final "close" checkpoint; the writer is then done."""
        if self.closed:
            return []
        objects = self._preamble()
        objects.extend(self._cut_segments())
        if self._lines:
            # Still held back for an incomplete reserved segment, and no more events will
            # come: seal them anyway (verify will report the overlap with that segment).
            self._reserved = []
            objects.extend(self._cut_segments())
        objects.append(self._checkpoint("close"))
        self.closed = True
        return self._remember(objects)

    def _remember(self, objects: list[PendingObject]) -> list[PendingObject]:
        """Keep each checkpoint's batch (its segments, and itself) until it is stored, so a
        later store() can put it if the call that owns it is stuck (see store)."""
        batch: list[PendingObject] = []
        with self._stored_lock:
            for obj in objects:
                batch.append(obj)
                if obj.kind == "checkpoint":
                    assert obj.checkpoint_index is not None
                    self._sealed[obj.checkpoint_index] = batch
                    batch = []
        return objects

    def _preamble(self) -> list[PendingObject]:
        objects: list[PendingObject] = []
        if self._key_pending:
            self._key_pending = False
            objects.append(
                PendingObject(
                    key_name(self.key_id), public_pem(self.signer.public), "key", self.epoch
                )
            )
        if self._need_genesis:
            self._need_genesis = False
            objects.append(self._checkpoint("genesis"))
        return objects

    def _build_lines(self) -> None:
        """Lines and event hashes of the appended events: the hash chain, in one pass."""
        events = self._events
        if not events:
            return
        seq = self._pending_first + len(self._lines)
        lines, leaves = self._format.chain(events, seq, self._prev)
        self._lines.extend(lines)
        self._leaves.extend(leaves)
        self._prev = leaves[-1]
        self._events = []

    def _cut_segments(self) -> list[PendingObject]:
        self._build_lines()
        if not self._lines:
            return []
        first = self._pending_first
        cuts = plan_cuts(first, first + len(self._lines), self._reserved)
        cuts = split_by_size(cuts, self._reserved, first, self._lines)
        objects = []
        for c_first, c_last in cuts:
            lo, hi = c_first - first, c_last - first + 1
            data = encode_segment(self._lines[lo:hi], compressed=self.compress)
            self._frontier.extend(self._leaves[lo:hi], node_pairs)
            self._head = self._leaves[hi - 1]
            name = segment_name(
                self.stream_id, self.epoch, c_first, c_last, compressed=self.compress
            )
            objects.append(PendingObject(name, data, "segment", self.epoch, c_first, c_last))
        if cuts:
            done = cuts[-1][1] + 1 - first
            del self._lines[:done]
            del self._leaves[:done]
            self._pending_first = cuts[-1][1] + 1
            self._reserved = [r for r in self._reserved if r[0] >= self._pending_first]
        return objects

    def _checkpoint(self, kind: str) -> PendingObject:
        now = max(self._clock(), self._checkpoint_time_ns)  # never earlier than the last one
        index = 0 if kind == "genesis" else self._checkpoint_index + 1
        if self._resumed and kind != "genesis":
            # The first checkpoint after a restart says so: the time since the previous
            # checkpoint is downtime the writer declares, not deleted checkpoints.
            kind = "resume" if kind != "close" else kind
            self._resumed = False
        # A genesis covers no events, even when events adopted at resume are waiting.
        tree = Frontier() if kind == "genesis" else self._frontier
        size = tree.size
        checkpoint = Checkpoint(
            stream=self.stream_id,
            epoch=self.epoch,
            index=index,
            kind=kind,
            prev=self._checkpoint_digest,
            tree_size=size,
            root=tree.root(),
            head=self._head if size else ZERO_HASH,
            frontier=tuple(tree.nodes),
            time=format_ns(now),
            heartbeat_ms=self.heartbeat_ms,
            key_id=self.key_id,
        )
        data, body = encode_checkpoint(checkpoint, self.signer)
        self._checkpoint_index = index
        self._checkpoint_digest = _sha256(body).digest()
        self._checkpoint_time_ns = now
        if kind != "genesis":
            self._need_checkpoint = False
        return PendingObject(
            checkpoint_name(self.stream_id, self.epoch, index), data, "checkpoint", self.epoch,
            None, size - 1 if size else None, index,
        )  # fmt: skip

    # -- storing (I/O) -------------------------------------------------------------------

    def store(self, objects: Iterable[PendingObject], *, timeout: float = 5.0) -> None:
        """Put sealed objects in order, idempotently. Thread-safe; never deadlocks.

        A checkpoint is put only after every earlier checkpoint of this writer is stored.
        If the earlier one is not stored within `timeout` seconds (its own store call is
        slow, failing or starved of threads), this call puts the earlier batches itself,
        in order, from the copies the writer keeps until they are stored; the puts are
        idempotent, so racing with their own calls is harmless. Destination errors
        propagate: retry the same call."""
        put = self.destination.put
        for obj in objects:
            if obj.kind != "checkpoint":
                put(obj.name, obj.data, self.retention)
                continue
            index = obj.checkpoint_index
            assert index is not None
            with self._stored_lock:
                ready = self._stored_lock.wait_for(self._stored_through(index - 1), timeout)
            if not ready:
                self._store_earlier(index)
            put(obj.name, obj.data, self.retention)
            self._mark_stored(index)

    def _stored_through(self, index: int) -> Callable[[], bool]:
        return lambda: self._stored_index >= index

    def _store_earlier(self, index: int) -> None:
        """Put the batches of every unstored checkpoint before `index`, oldest first."""
        while True:
            with self._stored_lock:
                following = self._stored_index + 1
                batch = self._sealed.get(following)
            if following >= index:
                return
            if batch is None:
                raise StoreError(
                    f"checkpoint {following} of stream {self.stream_id} is neither stored "
                    "nor known to this writer"
                )
            for obj in batch:
                self.destination.put(obj.name, obj.data, self.retention)
            self._mark_stored(following)

    def _mark_stored(self, index: int) -> None:
        with self._stored_lock:
            self._stored_index = max(self._stored_index, index)
            for done in [i for i in self._sealed if i <= self._stored_index]:
                del self._sealed[done]
            self._stored_lock.notify_all()

    @property
    def last_checkpoint_ns(self) -> int:
        """Time of the newest sealed checkpoint (0 before the first one)."""
        return self._checkpoint_time_ns

    @property
    def stored_checkpoint_index(self) -> int:
        """Index of the newest checkpoint of this epoch known to be stored (-1: none)."""
        with self._stored_lock:
            return self._stored_index


def plan_cuts(first: int, end: int, reserved: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Segments (first, last inclusive) to cut from pending seqs first..end-1.

    `reserved` are (first, last) ranges of segments already stored after a gap: a cut
    never crosses their boundaries, and a reserved range not yet fully appended is held
    back, so re-fed events reproduce exactly the stored segment.
    """
    cuts: list[tuple[int, int]] = []
    start = first
    for r_first, r_last in reserved:
        if r_last < start or r_first < start:
            continue  # already behind us (or inconsistent with what we hold): ignore
        if r_first >= end:
            break
        if r_first > start:
            cuts.append((start, r_first - 1))
            start = r_first
        if r_last >= end:
            return cuts  # hold back start..end-1 until the reserved segment is complete
        cuts.append((start, r_last))
        start = r_last + 1
    if start < end:
        cuts.append((start, end - 1))
    return cuts


def split_by_size(
    cuts: list[tuple[int, int]], reserved: list[tuple[int, int]], first: int, lines: list[bytes]
) -> list[tuple[int, int]]:
    """Split cuts so no segment holds more than MAX_SEGMENT_BYTES (lines with their LFs,
    FORMAT.md "Objects"); a reserved segment is re-created as it was stored, never split.
    One line always fits (MAX_EVENT_BYTES leaves room for its envelope)."""
    keep = set(reserved)
    out: list[tuple[int, int]] = []
    for c_first, c_last in cuts:
        lo, hi = c_first - first, c_last - first + 1
        if (c_first, c_last) in keep or sum(map(len, lines[lo:hi])) + hi - lo <= MAX_SEGMENT_BYTES:
            out.append((c_first, c_last))  # the usual case, summed at C speed
            continue
        start, size = c_first, 0
        for seq in range(c_first, c_last + 1):
            length = len(lines[seq - first]) + 1
            if size + length > MAX_SEGMENT_BYTES and seq > start:
                out.append((start, seq - 1))
                start, size = seq, 0
            size += length
        out.append((start, c_last))
    return out
