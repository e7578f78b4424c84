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
   move to `chunks.log` so a retransmitted Forward chunk is still recognised after a
   restart.

Files in the spool directory:

    seg-<first record number>.spool   records (see records.py)
    state.json                        {"released", "next_seq", "epoch"}, replaced atomically
    chunks.log                        chunk ids of released records, one JSON string per
                                      line (a client's id may contain a newline)

The spool never holds more than `max_bytes` of segment files: `append` raises
`SpoolFull` instead, and sources push back (Forward withholds acks, HTTP answers 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from auditlock.sidecar.spool.records import (
    HEADER,
    SpoolRecord,
    TornRecord,
    decode_payload,
    encode,
    pack_encoded,
    pack_payload,
    read_record,
)

log = logging.getLogger("auditlock.sidecar.spool")

SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".spool"


class SpoolFull(Exception):
    """No room for this append until shipping releases records; retry later."""


@dataclass
class RecoveryReport:
    segments: int = 0
    records: int = 0
    unreleased_records: int = 0
    torn_bytes: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _Segment:
    first: int
    path: Path
    size: int
    last: int  # last record number in it (first - 1 when empty)
    chunks: list[str]


@dataclass
class _Pending:
    payload: bytes
    chunks: list[str]
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
        self.committed = 0  # highest record number fsynced
        self._segments: list[_Segment] = []
        self._handle: BinaryIO | None = None
        self._chunks: OrderedDict[str, None] = OrderedDict()
        self._inflight_chunks: dict[str, asyncio.Future[int]] = {}
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._committer: asyncio.Task[None] | None = None
        self._new_records = asyncio.Event()
        self._room = asyncio.Event()
        self._closed = False
        self.full = False  # refusing appends until shipping frees room
        self._doomed: list[_Segment] = []  # released segment files not yet deleted
        self._persister: asyncio.Task[None] | None = None
        self.oldest_unreleased_ns: int | None = None
        self._record_times: OrderedDict[int, int] = OrderedDict()

    # --- recovery ---------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Scan the directory, truncate a torn tail, rebuild chunk memory. Call once."""
        self.directory.mkdir(parents=True, exist_ok=True)
        report = RecoveryReport()
        self._load_state()
        self._load_chunk_log()
        paths = sorted(
            self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"),
            key=lambda p: int(p.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]),
        )
        for index, path in enumerate(paths):
            first = int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])
            segment = _Segment(first, path, 0, first - 1, [])
            is_last = index == len(paths) - 1
            with open(path, "rb+") as handle:
                good = 0
                while True:
                    try:
                        item = read_record(handle)
                    except TornRecord as exc:
                        size = os.fstat(handle.fileno()).st_size
                        report.torn_bytes += size - good
                        message = f"{path.name}: record at byte {good} is torn ({exc})"
                        if is_last:
                            message += "; truncated (it was never acknowledged)"
                            handle.truncate(good)
                            os.fsync(handle.fileno())
                        else:
                            message += "; the rest of this segment is unreadable"
                        report.problems.append(message)
                        log.warning("spool recovery: %s", message)
                        break
                    if item is None:
                        break
                    number, payload = item
                    record = decode_payload(number, payload, HEADER.size + len(payload))
                    good = handle.tell()
                    segment.last = number
                    segment.chunks.extend(record.chunks)
                    report.records += 1
                    if number > self.released:
                        report.unreleased_records += 1
                        self._record_times[number] = record.spooled_ns
                segment.size = good
            self._segments.append(segment)
            for chunk in segment.chunks:
                self._remember_chunk(chunk)
        report.segments = len(self._segments)
        last_numbers = [s.last for s in self._segments if s.last >= s.first]
        self.committed = max([self.released, *last_numbers])
        self._update_oldest()
        self._compact_released()
        self._open_tail()
        self._set_room()
        return report

    def _load_state(self) -> None:
        path = self.directory / "state.json"
        if path.exists():
            state = json.loads(path.read_text())
            self.released = int(state["released"])
            self.released_next_seq = int(state["next_seq"])
            self.released_epoch = int(state["epoch"])

    def _load_chunk_log(self) -> None:
        path = self.directory / "chunks.log"
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in lines[-self.chunk_memory :]:
            if not line.startswith('"'):
                if line:  # written before ids were JSON-encoded
                    self._remember_chunk(line)
                continue
            try:
                self._remember_chunk(json.loads(line))
            except ValueError:
                log.warning("chunks.log: skipping a damaged line (torn write?)")

    def _open_tail(self) -> None:
        if self._segments and self._segments[-1].size < self.segment_bytes:
            self._handle = open(self._segments[-1].path, "ab")  # noqa: SIM115 - held open
        else:
            self._new_segment(self.committed + 1)

    def _new_segment(self, first: int) -> None:
        if self._handle is not None:
            self._handle.close()
        path = self.directory / f"{SEGMENT_PREFIX}{first:020d}{SEGMENT_SUFFIX}"
        self._handle = open(path, "ab")  # noqa: SIM115 - held open until rotated
        self._segments.append(_Segment(first, path, 0, first - 1, []))
        _fsync_dir(self.directory)

    # --- intake side ------------------------------------------------------------

    @property
    def bytes_used(self) -> int:
        return sum(s.size for s in self._segments) + self._pending_bytes

    @property
    def fill_ratio(self) -> float:
        return self.bytes_used / self.max_bytes

    def has_room(self, nbytes: int = 0) -> bool:
        return self.bytes_used + nbytes <= self.max_bytes

    @property
    def resume_bytes(self) -> int:
        """Free space a full spool needs before waiting writers retry (hysteresis)."""
        return min(self.max_bytes // 10, 4 * 1024 * 1024)

    async def wait_for_room(self) -> None:
        while not self.has_room(self.resume_bytes):
            self._room.clear()
            await self._room.wait()

    def seen_chunk(self, chunk: str) -> bool:
        """True when a record holding this chunk id is already durable."""
        return chunk in self._chunks

    def inflight_chunk(self, chunk: str) -> asyncio.Future[int] | None:
        """The commit a chunk id is waiting for, if another connection is spooling it."""
        return self._inflight_chunks.get(chunk)

    def pack(self, events: list[dict[str, Any]], chunks: list[str]) -> bytes:
        """Pack a record payload (raises on values msgpack cannot encode)."""
        return pack_payload(chunks, time.time_ns(), events)

    def pack_encoded(self, encoded: list[bytes], chunks: list[str]) -> bytes:
        """Pack a record payload from events already in canonical bytes."""
        return pack_encoded(chunks, time.time_ns(), encoded)

    async def append(self, events: list[dict[str, Any]], chunks: list[str] | None = None) -> int:
        """Spool `events` durably; returns the record number once fsynced."""
        return await self.append_packed(self.pack(events, chunks or []), chunks or [])

    async def append_packed(self, payload: bytes, chunks: list[str]) -> int:
        if self._closed:
            raise SpoolFull("the spool is closed (shutting down)")
        size = HEADER.size + len(payload)
        # Once full, stay full until shipping frees `resume_bytes` (hysteresis): every
        # source then pushes back alike instead of small appends slipping through.
        if self.full or not self.has_room(size):
            self.full = True
            self._room.clear()
            raise SpoolFull(
                f"spool full: {self.bytes_used} of {self.max_bytes} bytes wait for shipping"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(payload, chunks, future))
        self._pending_bytes += size
        for chunk in chunks:
            self._inflight_chunks[chunk] = future
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_loop())
        return await asyncio.shield(future)

    async def _commit_loop(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                first = self.committed + 1
                blobs = [encode(first + i, p.payload) for i, p in enumerate(batch)]
                try:
                    await asyncio.to_thread(self._write_batch, first, blobs, batch)
                except Exception as exc:
                    log.error("spool write failed: %s", exc)
                    self._pending_bytes -= sum(len(b) for b in blobs)
                    for item in batch:
                        for chunk in item.chunks:
                            self._inflight_chunks.pop(chunk, None)
                        if not item.future.done():
                            item.future.set_exception(SpoolFull(f"spool write failed: {exc}"))
                    continue
                now = time.time_ns()
                self._pending_bytes -= sum(len(b) for b in blobs)
                for offset, item in enumerate(batch):
                    number = first + offset
                    self._record_times[number] = now
                    for chunk in item.chunks:
                        self._remember_chunk(chunk)
                        self._inflight_chunks.pop(chunk, None)
                    if not item.future.done():
                        item.future.set_result(number)
                self.committed = first + len(batch) - 1
                self._update_oldest()
                self._new_records.set()
        finally:
            self._committer = None

    def _write_batch(self, first: int, blobs: list[bytes], batch: list[_Pending]) -> None:
        # Runs in a worker thread: the only writer of the tail file.
        segment = self._segments[-1]
        if segment.size >= self.segment_bytes:
            self._new_segment(first)
            segment = self._segments[-1]
        assert self._handle is not None
        data = b"".join(blobs)
        self._handle.write(data)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        segment.size += len(data)
        segment.last = first + len(blobs) - 1
        for item in batch:
            segment.chunks.extend(item.chunks)

    def _remember_chunk(self, chunk: str) -> None:
        self._chunks[chunk] = None
        if len(self._chunks) > self.chunk_memory:
            self._chunks.popitem(last=False)

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
        for done in [n for n in self._record_times if n <= number]:
            del self._record_times[done]
        self._update_oldest()
        self._doomed.extend(self._take_released_segments())
        self._set_room()
        if self._persister is None or self._persister.done():
            self._persister = asyncio.create_task(self._persist_loop())

    async def _persist_loop(self) -> None:
        while True:
            state = self._state()
            doomed, self._doomed = self._doomed, []
            await asyncio.to_thread(self._persist, state, doomed)
            if state == self._state() and not self._doomed:
                return

    async def settle(self) -> None:
        """Wait until every release is persisted (state file written, files deleted)."""
        while self._persister is not None and not self._persister.done():
            await asyncio.shield(self._persister)

    def _state(self) -> dict[str, int | None]:
        return {
            "released": self.released,
            "next_seq": self.released_next_seq,
            "epoch": self.released_epoch,
        }

    def _persist(self, state: dict[str, int | None], doomed: list[_Segment]) -> None:
        # State first: a crash after it and before the deletions only leaves released
        # files behind, which the next open() deletes. The reverse order could lose data.
        self._write_state(state)
        self._delete_segments(doomed)

    def _write_state(self, state: dict[str, int | None] | None = None) -> None:
        path = self.directory / "state.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(state or self._state(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def _take_released_segments(self) -> list[_Segment]:
        # Never the tail segment: it is the one being appended to.
        taken = []
        while len(self._segments) > 1 and self._segments[0].last <= self.released:
            taken.append(self._segments.pop(0))
        return taken

    def _delete_segments(self, segments: list[_Segment]) -> None:
        chunks = [c for segment in segments for c in segment.chunks]
        if chunks:
            self._append_chunk_log(chunks)
        for segment in segments:
            segment.path.unlink(missing_ok=True)
        self._rewrite_chunk_log_if_long()

    def _compact_released(self) -> None:
        self._delete_segments(self._take_released_segments())

    def _append_chunk_log(self, chunks: list[str]) -> None:
        with open(self.directory / "chunks.log", "a", encoding="utf-8") as handle:
            handle.write("".join(f"{json.dumps(c)}\n" for c in chunks))
            handle.flush()
            os.fsync(handle.fileno())

    def _rewrite_chunk_log_if_long(self) -> None:
        path = self.directory / "chunks.log"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size < 64 * self.chunk_memory:
            return
        keep = path.read_text(encoding="utf-8").splitlines()[-self.chunk_memory :]
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{c}\n" for c in keep))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _update_oldest(self) -> None:
        self.oldest_unreleased_ns = next(iter(self._record_times.values()), None)

    def _set_room(self) -> None:
        if self.has_room(self.resume_bytes):
            self.full = False
            self._room.set()

    def segment_paths(self) -> list[Path]:
        return [s.path for s in self._segments]

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class SpoolReader:
    """Reads durable records in order, starting after a record number."""

    def __init__(self, spool: Spool, after: int) -> None:
        self.spool = spool
        self.position = after  # last record number returned
        self._path: Path | None = None
        self._handle: BinaryIO | None = None

    def _open_at(self, number: int) -> bool:
        segments = self.spool._segments
        candidates = [s for s in segments if s.first <= number]
        segment = candidates[-1] if candidates else (segments[0] if segments else None)
        if segment is None:
            return False
        if self._handle is not None:
            self._handle.close()
        self._handle = open(segment.path, "rb")  # noqa: SIM115 - held across calls
        self._path = segment.path
        return True

    def read(self, max_events: int) -> list[SpoolRecord]:
        """Durable records after the current position, up to about `max_events` events."""
        out: list[SpoolRecord] = []
        count = 0
        while self.position < self.spool.committed and count < max_events:
            record = self._next()
            if record is None:
                break
            if record.number <= self.position:
                continue
            self.position = record.number
            out.append(record)
            count += len(record.events)
        return out

    def _next(self) -> SpoolRecord | None:
        for _ in range(3):
            if self._handle is None and not self._open_at(self.position + 1):
                return None
            assert self._handle is not None
            start = self._handle.tell()
            try:
                item = read_record(self._handle)
            except TornRecord:
                item = None
                self._handle.seek(start)
            if item is not None:
                number, payload = item
                return decode_payload(number, payload, HEADER.size + len(payload))
            # End of this file: move to the segment holding the next record, if any.
            self._handle.seek(start)
            nxt = [s for s in self.spool._segments if s.first > self.position]
            if not nxt or (self._path is not None and nxt[0].path == self._path):
                return None
            self._handle.close()
            self._handle = open(nxt[0].path, "rb")  # noqa: SIM115
            self._path = nxt[0].path
        return None

    def records(self, max_events: int) -> Iterator[SpoolRecord]:
        yield from self.read(max_events)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
