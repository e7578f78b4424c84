"""Group commit: every append that arrives while a write+fsync runs joins the next one.

Appends are queued with a future each; one task writes the queued records to the tail
segment file with one `pwrite` + `fsync` per batch (in a worker thread) and resolves the
futures with their record numbers. A failed write is cut off again (ftruncate back to
the last durable byte, fsynced) before anything else is written, and no append of that
batch is acknowledged: record numbers in the files never repeat and never skip. If even
the cut fails, the spool is `broken` and refuses every later append until a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from auditlock.sidecar.spool.chunk_ids import ChunkKeys
from auditlock.sidecar.spool.records import HEADER, encode
from auditlock.sidecar.spool.state import SpoolState

log = logging.getLogger("auditlock.sidecar.spool")


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


@dataclass
class _Pending:
    payload: bytes
    digests: list[bytes]
    future: asyncio.Future[int]


class GroupCommit:
    def __init__(self, state: SpoolState, keys: ChunkKeys) -> None:
        self.state = state
        self.keys = keys
        self.pending_bytes = 0  # records queued, not yet written
        self.broken: str | None = None  # a failed write could not be cut off again
        self.on_write_error: Callable[[], None] | None = None  # a metric counter
        self._pending: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None
        self._new_records = asyncio.Event()

    async def add(self, payload: bytes, digests: list[bytes]) -> int:
        """Queue one record (its size already admitted); its number once fsynced."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(payload, digests, future))
        self.pending_bytes += HEADER.size + len(payload)
        self.keys.writing(digests, future)
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_loop())
        return await asyncio.shield(future)

    async def _commit_loop(self) -> None:
        state = self.state
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                first = state.committed + 1
                blobs = [encode(first + i, p.payload) for i, p in enumerate(batch)]
                data = b"".join(blobs)
                try:
                    await self._write(first, data)
                except OSError as exc:
                    self._failed(batch, len(data), exc)
                    continue
                now = time.time_ns()
                self.pending_bytes -= len(data)
                tail = state.segments[-1]
                tail.size += len(data)
                tail.last = first + len(batch) - 1
                for offset, item in enumerate(batch):
                    state.unreleased.add(first + offset, now, len(blobs[offset]))
                    self.keys.written(item.digests)
                    if not item.future.done():
                        item.future.set_result(first + offset)
                state.committed = first + len(batch) - 1
                state.update_oldest()
                self._new_records.set()
        finally:
            self._committer = None

    def _failed(self, batch: list[_Pending], size: int, exc: OSError) -> None:
        if self.on_write_error is not None:
            self.on_write_error()
        log.error("spool write of %d record(s) failed, nothing of it kept: %s", len(batch), exc)
        self.pending_bytes -= size
        for item in batch:
            self.keys.not_written(item.digests)
            if not item.future.done():
                item.future.set_exception(SpoolWriteFailed(f"spool write failed: {exc}", 0))

    async def _write(self, first: int, data: bytes) -> None:
        if self.broken:
            raise OSError(f"the spool disk failed earlier ({self.broken})")
        state = self.state
        if state.segments[-1].size >= state.segment_bytes:
            state.segments.append(await asyncio.to_thread(state.create_segment, first))
        tail = state.segments[-1]
        fd = state.tail_fd
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
        while self.state.committed <= after:
            self._new_records.clear()
            try:
                await asyncio.wait_for(self._new_records.wait(), wait_seconds)
            except TimeoutError:
                return self.state.committed > after
        return True

    async def flush(self) -> None:
        """Wait for every queued append to be durable."""
        committer = self._committer
        while committer is not None:
            await asyncio.shield(committer)
            committer = self._committer
