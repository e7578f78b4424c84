"""The write-ahead spool: append-only segment files, fsync per batch, bounded size.

Life of a record:

1. `append(events, chunks)` packs the events, waits for a group commit (every append
   that arrives while a write+fsync runs joins the next one) and returns the record
   number once the bytes are fsynced. Only then may a source acknowledge its sender.
2. The shipper reads records in order (`reader(after)`), turns them into ledger
   segments and uploads them.
3. `release(number, next_seq, epoch)` marks every record up to `number` as stored
   under lock: a checkpoint covering ledger seqs below `next_seq` of `epoch` is stored.
   Segment files whose records are all released are deleted; the chunk ids they held
   move to `chunk-ids.log` so a retransmitted chunk is still recognised after a restart.

Files in the spool directory:

    seg-<first record number>.spool   records (see records.py)
    state.json                        {"released", "next_seq", "epoch", "gaps"}, replaced
                                      atomically; gaps are record numbers known lost
    chunk-ids.log                     digests of chunk ids of released records (chunk_ids.py)
    damaged/                          copies of damaged files found at start (recovery.py)

A failed write (EFBIG, ENOSPC, EIO, a failed fsync) is cut off again (ftruncate back to
the last durable byte, fsynced) before the next write, and no append in that batch is
acknowledged: record numbers in the files never repeat and never skip. If even the cut
fails, the spool refuses every later append (`broken`) until a restart, whose recovery
deals with the tail. The reader reads only durable bytes, with explicit offsets (no
read-ahead buffer that could hold bytes of a write that was later cut), and a record
number that is not the one expected is an error (`SpoolCorrupt`), never skipped.

Space: `max_bytes` bounds the records not yet released plus appends waiting for their
write (released records in the tail file are not counted; the disk holds at most
`segment_bytes` more). A record larger than `max_bytes` can never be stored:
`RecordTooLarge` at once. Otherwise `SpoolFull` when it does not fit now; once free
space falls below `resume_bytes`, every append is refused until shipping frees that
much (hysteresis), so every source pushes back alike. `wait_for_room(n)` waits (no
polling) until `n` bytes fit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditlock.sidecar.spool import chunk_ids
from auditlock.sidecar.spool.chunk_ids import ChunkMemory
from auditlock.sidecar.spool.records import (
    HEADER,
    BadRecord,
    SpoolRecord,
    decode_payload,
    encode,
    pack_encoded,
    pack_payload,
    payload_chunks,
    read_at,
)
from auditlock.sidecar.spool.recovery import (
    STATE_NAME,
    RecoveryReport,
    SegmentInfo,
    recover,
    segment_name,
)
from auditlock.sidecar.spool.unreleased import Unreleased

log = logging.getLogger("auditlock.sidecar.spool")

__all__ = [
    "RecordTooLarge",
    "RecoveryReport",
    "Spool",
    "SpoolCorrupt",
    "SpoolFull",
    "SpoolReader",
    "SpoolWriteFailed",
]


class SpoolFull(Exception):
    """No room for this append until shipping releases records; retry later.

    `needed`: the bytes the refused append takes (what `wait_for_room` waits for).
    """

    def __init__(self, message: str, needed: int = 0) -> None:
        super().__init__(message)
        self.needed = needed


class SpoolWriteFailed(SpoolFull):
    """The write or fsync failed (disk full, file too large, I/O error); nothing of it
    is kept. Retry after a pause."""


class RecordTooLarge(SpoolFull):
    """The record is larger than the whole spool: it can never be stored."""


class SpoolCorrupt(Exception):
    """A durable record cannot be read back, or is not the one expected: names file and offset."""


@dataclass
class _Pending:
    payload: bytes
    digests: list[bytes]
    future: asyncio.Future[int]


class Spool:
    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int,
        chunk_memory: int = 200_000,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.chunk_memory = chunk_memory
        self.released = 0  # highest record number stored under lock
        # The ledger position right after the released records: the writer's next_seq and
        # epoch. None until the first start has recorded where this spool joined the stream.
        self.released_next_seq: int | None = None
        self.released_epoch: int | None = None
        self.committed = 0  # highest record number fsynced (or known lost)
        self.gaps: list[tuple[int, int]] = []  # record numbers known lost (recovery)
        self._segments: list[SegmentInfo] = []
        self._fd: int | None = None  # the tail segment, written with pwrite
        self._memory = ChunkMemory(chunk_memory)
        self._inflight_chunks: dict[bytes, asyncio.Future[int]] = {}
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._committer: asyncio.Task[None] | None = None
        self._new_records = asyncio.Event()
        self._room = asyncio.Event()
        self._closed = False
        self.full = False  # refusing appends until shipping frees resume_bytes
        self.broken: str | None = None  # a failed write could not be cut off again
        self.on_write_error: Callable[[], None] | None = None  # a metric counter
        self._doomed: list[SegmentInfo] = []  # released segment files not yet deleted
        self._persister: asyncio.Task[None] | None = None
        self.oldest_unreleased_ns: int | None = None
        self._unreleased = Unreleased(0)  # records not yet released

    # --- recovery ---------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Check and recover the directory (recovery.py), rebuild chunk memory. Call once."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for item in chunk_ids.load_log(self.directory, self.chunk_memory):
            self._memory.add(item)
        found = recover(self.directory, self._memory)
        self._segments = found.segments
        self.released = found.released
        self.released_next_seq = found.next_seq
        self.released_epoch = found.epoch
        self.gaps = found.gaps
        self.committed = found.committed
        self._unreleased = found.unreleased
        if found.state_changed:
            self._write_state()
        self._update_oldest()
        self._delete_segments(self._take_released_segments())
        self._open_tail()
        self._set_room()
        return found.report

    def _open_tail(self) -> None:
        tail = self._segments[-1] if self._segments else None
        if tail is not None and tail.last == self.committed and tail.size < self.segment_bytes:
            self._fd = os.open(tail.path, os.O_WRONLY)
        else:
            self._segments.append(self._create_segment(self.committed + 1))

    def _create_segment(self, first: int) -> SegmentInfo:
        """A new, empty tail file (blocking: called in a worker thread or at open)."""
        path = self.directory / segment_name(first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        return SegmentInfo(first, path, 0, first - 1)

    # --- intake side ------------------------------------------------------------

    @property
    def bytes_used(self) -> int:
        """Bytes of records not yet released plus appends waiting for their write."""
        return self._unreleased.bytes + self._pending_bytes

    @property
    def fill_ratio(self) -> float:
        return self.bytes_used / self.max_bytes

    def has_room(self, nbytes: int = 0) -> bool:
        return self.bytes_used + nbytes <= self.max_bytes

    @property
    def resume_bytes(self) -> int:
        """Free space a full spool needs before waiting writers retry (hysteresis)."""
        return min(self.max_bytes // 10, 4 * 1024 * 1024)

    async def wait_for_room(self, nbytes: int = 0) -> None:
        """Wait until an append of `nbytes` would be taken (or the spool closes)."""
        while not self._closed and (self.full or not self.has_room(nbytes)):
            self._room.clear()
            await self._room.wait()

    def seen_chunk(self, key: str) -> bool:
        """True when a record holding this chunk key is already durable (chunk_ids.py)."""
        return chunk_ids.digest(key) in self._memory

    def inflight_chunk(self, key: str) -> asyncio.Future[int] | None:
        """The commit a chunk key is waiting for, if another connection is spooling it."""
        return self._inflight_chunks.get(chunk_ids.digest(key))

    def pack(self, events: list[dict[str, Any]], chunks: list[str]) -> bytes:
        """Pack a record payload (raises on values msgpack cannot encode)."""
        return pack_payload(_digests(chunks), time.time_ns(), events)

    def pack_encoded(self, encoded: list[bytes], chunks: list[str]) -> bytes:
        """Pack a record payload from events already in canonical bytes."""
        return pack_encoded(_digests(chunks), time.time_ns(), encoded)

    async def append(self, events: list[dict[str, Any]], chunks: list[str] | None = None) -> int:
        """Spool `events` durably; returns the record number once fsynced."""
        return await self.append_packed(self.pack(events, chunks or []), chunks or [])

    async def append_packed(self, payload: bytes, chunks: list[str]) -> int:
        if self._closed:
            raise SpoolFull("the spool is closed (shutting down)")
        if self.broken:
            raise SpoolWriteFailed(f"the spool disk failed ({self.broken}); restart the collector")
        size = HEADER.size + len(payload)
        if size > self.max_bytes:
            raise RecordTooLarge(
                f"a record of {size} bytes can never be spooled: spool.max_bytes is "
                f"{self.max_bytes}; send smaller batches",
                size,
            )
        if self.full or not self.has_room(size):
            # Below resume_bytes free, stay full until shipping frees that much: every
            # source then pushes back alike instead of small appends slipping through.
            if not self.has_room(self.resume_bytes):
                self.full = True
            raise SpoolFull(
                f"spool full: {self.bytes_used} of {self.max_bytes} bytes wait for shipping; "
                f"this record needs {size}",
                size,
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        digests = _digests(chunks)
        self._pending.append(_Pending(payload, digests, future))
        self._pending_bytes += size
        for item in digests:
            self._inflight_chunks[item] = future
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_loop())
        return await asyncio.shield(future)

    async def _commit_loop(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                first = self.committed + 1
                blobs = [encode(first + i, p.payload) for i, p in enumerate(batch)]
                data = b"".join(blobs)
                try:
                    await self._write(first, data)
                except OSError as exc:
                    if self.on_write_error is not None:
                        self.on_write_error()
                    log.error(
                        "spool write of %d record(s) failed, nothing of it kept: %s",
                        len(batch),
                        exc,
                    )
                    self._pending_bytes -= len(data)
                    for item in batch:
                        for digest in item.digests:
                            self._inflight_chunks.pop(digest, None)
                        if not item.future.done():
                            item.future.set_exception(
                                SpoolWriteFailed(f"spool write failed: {exc}", 0)
                            )
                    continue
                now = time.time_ns()
                self._pending_bytes -= len(data)
                tail = self._segments[-1]
                tail.size += len(data)
                tail.last = first + len(batch) - 1
                for offset, item in enumerate(batch):
                    number = first + offset
                    self._unreleased.add(number, now, len(blobs[offset]))
                    for digest in item.digests:
                        self._memory.add(digest)
                        self._inflight_chunks.pop(digest, None)
                    if not item.future.done():
                        item.future.set_result(number)
                self.committed = first + len(batch) - 1
                self._update_oldest()
                self._new_records.set()
        finally:
            self._committer = None

    async def _write(self, first: int, data: bytes) -> None:
        if self.broken:
            raise OSError(f"the spool disk failed earlier ({self.broken})")
        if self._segments[-1].size >= self.segment_bytes:
            self._segments.append(await asyncio.to_thread(self._create_segment, first))
        tail = self._segments[-1]
        fd = self._fd
        assert fd is not None
        await asyncio.to_thread(self._write_at, fd, tail.size, data)

    def _write_at(self, fd: int, offset: int, data: bytes) -> None:
        # Runs in a worker thread: the only writer of the tail file.
        try:
            view = memoryview(data)
            written = 0
            while written < len(data):
                written += os.pwrite(fd, view[written:], offset + written)
            os.fsync(fd)
        except OSError:
            try:  # cut the failed write off, durably, before anything else is written
                os.ftruncate(fd, offset)
                os.fsync(fd)
            except OSError as undo:
                self.broken = f"cannot cut a failed write off the tail file: {undo}"
                log.error("spool: %s; refusing appends until a restart", self.broken)
            raise

    async def wait_committed(self, after: int, wait_seconds: float | None = None) -> bool:
        """Wait until a record numbered above `after` is durable (or the timeout)."""
        while self.committed <= after:
            self._new_records.clear()
            try:
                await asyncio.wait_for(self._new_records.wait(), wait_seconds)
            except TimeoutError:
                return self.committed > after
        return True

    async def flush(self) -> None:
        """Wait for every pending append to be durable."""
        committer = self._committer
        while committer is not None:
            await asyncio.shield(committer)
            committer = self._committer

    # --- shipping side ----------------------------------------------------------

    def reader(self, after: int) -> SpoolReader:
        return SpoolReader(self, after)

    def gap_at(self, number: int) -> tuple[int, int] | None:
        """The lost range starting at record `number`, if any."""
        for gap in self.gaps:
            if gap[0] == number:
                return gap
        return None

    def join_stream(self, next_seq: int, epoch: int) -> None:
        """Record where a fresh spool joined the ledger stream (before shipping anything)."""
        self.released_next_seq = next_seq
        self.released_epoch = epoch
        self._write_state()

    def release(self, number: int, next_seq: int, epoch: int) -> None:
        """Records up to `number` are stored under lock, up to ledger `next_seq` of `epoch`.

        Memory is updated at once (the space counts as free); the state file and the
        deletion of fully released segment files follow in a worker thread, in that
        order, so the event loop never waits for their fsyncs. `settle()` waits for them.
        """
        if number <= self.released and next_seq == self.released_next_seq:
            return
        self.released = max(self.released, number)
        self.released_next_seq = next_seq
        self.released_epoch = epoch
        self.gaps = [g for g in self.gaps if g[1] > self.released]
        self._unreleased.release(number)
        self._update_oldest()
        self._doomed.extend(self._take_released_segments())
        self._set_room()
        if self._persister is None or self._persister.done():
            self._persister = asyncio.create_task(self._persist_loop())

    async def _persist_loop(self) -> None:
        delay = 0.2
        while True:
            state = self._state()
            doomed, self._doomed = self._doomed, []
            try:
                await asyncio.to_thread(self._persist, state, doomed)
            except OSError as exc:
                # Disk full or failing: the released files stay until the state is
                # written (deleting them first could lose data); retry.
                log.error("cannot persist the spool state (%s); retrying in %.1fs", exc, delay)
                self._doomed[:0] = doomed
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if state == self._state() and not self._doomed:
                return

    async def settle(self) -> None:
        """Wait until every release is persisted (state file written, files deleted)."""
        while self._persister is not None and not self._persister.done():
            await asyncio.shield(self._persister)

    def _state(self) -> dict[str, Any]:
        return {
            "released": self.released,
            "next_seq": self.released_next_seq,
            "epoch": self.released_epoch,
            "gaps": [list(g) for g in self.gaps if g[1] > self.released],
        }

    def _persist(self, state: dict[str, Any], doomed: list[SegmentInfo]) -> None:
        # State first: a crash after it and before the deletions only leaves released
        # files behind, which the next open() deletes. The reverse order could lose data.
        self._write_state(state)
        self._delete_segments(doomed)

    def _write_state(self, state: dict[str, Any] | None = None) -> None:
        path = self.directory / STATE_NAME
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(state or self._state(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def _take_released_segments(self) -> list[SegmentInfo]:
        # Never the tail segment: it is the one being appended to.
        taken = []
        while len(self._segments) > 1 and self._segments[0].last <= self.released:
            taken.append(self._segments.pop(0))
        return taken

    def _delete_segments(self, segments: list[SegmentInfo]) -> None:
        """Move the chunk ids of released files to the log (fsynced), then delete them."""
        for segment in segments:
            chunk_ids.append_log(self.directory, _segment_chunks(segment))
            segment.path.unlink(missing_ok=True)
        if segments:
            chunk_ids.compact_log(self.directory, self.chunk_memory)

    def _update_oldest(self) -> None:
        self.oldest_unreleased_ns = self._unreleased.oldest_ns()

    def _set_room(self) -> None:
        if self.has_room(self.resume_bytes):
            self.full = False
        self._room.set()  # waiters re-check whether their record fits now

    def segment_paths(self) -> list[Path]:
        return [s.path for s in self._segments]

    def close(self) -> None:
        self._closed = True
        self._room.set()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SpoolReader:
    """Reads durable records in order, starting after a record number.

    Reads go through `os.pread` up to the durable end of each file, never further:
    bytes past it may belong to a write that fails and is cut off again.
    """

    def __init__(self, spool: Spool, after: int) -> None:
        self.spool = spool
        self.position = after  # last record number returned (or skipped as lost)
        self._segment: SegmentInfo | None = None
        self._fd: int | None = None
        self._offset = 0
        self._gap = 0  # lost records just stepped over, reported on the next record
        self._positioning = False  # skipping records before `after` in the first file

    def read(self, max_events: int) -> list[SpoolRecord]:
        """Durable records after the current position, up to about `max_events` events.

        Raises SpoolCorrupt when a durable record cannot be read or is not the next one.
        """
        out: list[SpoolRecord] = []
        count = 0
        while self.position < self.spool.committed and count < max_events:
            gap = self.spool.gap_at(self.position + 1)
            if gap is not None:
                self._gap += gap[1] - gap[0] + 1
                self.position = gap[1]
                continue
            record = self._next(self.position + 1)
            if record is None:
                break
            self.position = record.number
            out.append(record)
            count += len(record.events)
        return out

    def _next(self, wanted: int) -> SpoolRecord | None:
        segment = self._segment
        if segment is None or self._offset >= segment.size:
            segment = self._locate(wanted)
            if segment is None:
                return None
        assert self._fd is not None
        while self._offset < segment.size:
            offset = self._offset
            try:
                number, payload = read_at(self._fd, offset, segment.size)
            except BadRecord as exc:
                raise SpoolCorrupt(f"{segment.path} at byte {offset}: {exc}") from None
            self._offset = offset + HEADER.size + len(payload)
            if number < wanted and self._positioning:
                continue  # positioning inside the first file read
            if number != wanted:
                raise SpoolCorrupt(
                    f"{segment.path} at byte {offset}: record number {number}, expected {wanted}"
                )
            self._positioning = False
            record = decode_payload(number, payload, HEADER.size + len(payload))
            if self._gap:
                record = dataclasses.replace(record, gap_before=self._gap)
                self._gap = 0
            return record
        return None

    def _locate(self, wanted: int) -> SegmentInfo | None:
        """Open the file that holds record `wanted`; None when it is not durable yet."""
        candidates = [s for s in self.spool._segments if s.first <= wanted]
        if not candidates:
            raise SpoolCorrupt(f"no spool file holds record {wanted}")
        segment = candidates[-1]
        if segment is self._segment:
            if segment is self.spool._segments[-1]:
                return None  # the tail: the record is not durable yet
            raise SpoolCorrupt(
                f"{segment.path} ends at byte {segment.size} without record {wanted}"
            )
        self.close()
        self._fd = os.open(segment.path, os.O_RDONLY)
        self._segment = segment
        self._offset = 0
        self._positioning = segment.first < wanted
        return segment

    def records(self, max_events: int) -> Iterator[SpoolRecord]:
        yield from self.read(max_events)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._segment = None


def _digests(chunks: list[str]) -> list[bytes]:
    return [chunk_ids.digest(c) for c in chunks]


def _segment_chunks(segment: SegmentInfo) -> list[bytes]:
    """The chunk id digests held in a segment file (read in a worker thread)."""
    out: list[bytes] = []
    try:
        fd = os.open(segment.path, os.O_RDONLY)
    except FileNotFoundError:
        return out  # deleted by an earlier attempt, after its ids were logged
    try:
        offset = 0
        while offset < segment.size:
            try:
                _, payload = read_at(fd, offset, segment.size)
            except BadRecord as exc:
                log.error("%s at byte %d: %s; its chunk ids are lost", segment.path, offset, exc)
                break
            out.extend(payload_chunks(payload)[0])
            offset += HEADER.size + len(payload)
    finally:
        os.close(fd)
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
