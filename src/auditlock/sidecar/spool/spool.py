"""The write-ahead spool: append-only segment files, fsync per batch, bounded size.

Life of a record:

1. `append(events, keys)` packs events already in canonical bytes with the batch's keys
   (chunk ids, chunk_ids.py), waits for a group commit (commit.py) and returns the
   record number once the bytes are fsynced. Only then may a source acknowledge.
2. The shipper reads records in order (`reader(after)`, reader.py), turns them into
   ledger segments and uploads them.
3. `release(number, next_seq, epoch)` (release.py) marks every record up to `number` as
   stored under lock. Segment files whose records are all released are deleted; the
   chunk ids they held move to `chunk-ids.log`.

The parts, one responsibility each: recovery.py checks and repairs the directory at
`open`; commit.py writes and fsyncs (group commit); chunk_ids.py remembers keys
(`ChunkKeys`); release.py frees space and files; reader.py reads back. This class
wires them and owns the space: pushback.

Files in the spool directory:

    seg-<first record number>.spool   records (see records.py)
    state.json                        {"released", "next_seq", "epoch", "gaps"}, replaced
                                      atomically; gaps are record numbers known lost
    chunk-ids.log                     digests of chunk ids of released records (chunk_ids.py)
    damaged/                          copies of damaged files found at start (recovery.py)

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
import time
from collections.abc import Callable
from pathlib import Path

from auditlock.sidecar.spool import chunk_ids
from auditlock.sidecar.spool.chunk_ids import ChunkKeys
from auditlock.sidecar.spool.commit import GroupCommit, SpoolFull, SpoolWriteFailed
from auditlock.sidecar.spool.reader import SpoolCorrupt, SpoolReader
from auditlock.sidecar.spool.records import HEADER, pack_encoded
from auditlock.sidecar.spool.recovery import RecoveryReport, recover
from auditlock.sidecar.spool.release import Release
from auditlock.sidecar.spool.state import SpoolState

__all__ = [
    "RecordTooLarge",
    "RecoveryReport",
    "Spool",
    "SpoolCorrupt",
    "SpoolFull",
    "SpoolReader",
    "SpoolWriteFailed",
]


class RecordTooLarge(SpoolFull):
    """The record is larger than the whole spool: it can never be stored."""


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
        self.state = SpoolState(self.directory, segment_bytes)
        self.keys = ChunkKeys(chunk_memory)
        self.commits = GroupCommit(self.state, self.keys)
        self.releases = Release(self.state, chunk_memory, self._set_room)
        self._room = asyncio.Event()
        self._closed = False
        self.full = False  # refusing appends until shipping frees resume_bytes

    # --- recovery ---------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Check and recover the directory (recovery.py), rebuild chunk memory. Call once."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keys.load(self.directory)
        found = recover(self.directory, self.keys.memory)
        state = self.state
        state.segments = found.segments
        state.released = found.released
        state.released_next_seq = found.next_seq
        state.released_epoch = found.epoch
        state.gaps = found.gaps
        state.committed = found.committed
        state.unreleased = found.unreleased
        if found.state_changed:
            self.releases.write_state()
        state.update_oldest()
        self.releases.delete_segments(self.releases.take_released_segments())
        state.open_tail()
        self._set_room()
        return found.report

    # --- where the records stand ------------------------------------------------

    @property
    def committed(self) -> int:
        """The highest record number fsynced (or known lost)."""
        return self.state.committed

    @property
    def released(self) -> int:
        """The highest record number stored under lock."""
        return self.state.released

    @property
    def released_next_seq(self) -> int | None:
        return self.state.released_next_seq

    @property
    def released_epoch(self) -> int | None:
        return self.state.released_epoch

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return self.state.gaps

    @property
    def oldest_unreleased_ns(self) -> int | None:
        return self.state.oldest_unreleased_ns

    @property
    def broken(self) -> str | None:
        """Why the spool refuses appends until a restart (a failed write not cut off)."""
        return self.commits.broken

    @property
    def on_write_error(self) -> Callable[[], None] | None:
        return self.commits.on_write_error

    @on_write_error.setter
    def on_write_error(self, callback: Callable[[], None] | None) -> None:
        self.commits.on_write_error = callback

    def segment_paths(self) -> list[Path]:
        return [s.path for s in self.state.segments]

    # --- space and pushback -------------------------------------------------------

    @property
    def bytes_used(self) -> int:
        """Bytes of records not yet released plus appends waiting for their write."""
        return self.state.unreleased.bytes + self.commits.pending_bytes

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

    def _set_room(self) -> None:
        if self.has_room(self.resume_bytes):
            self.full = False
        self._room.set()  # waiters re-check whether their record fits now

    # --- intake side ----------------------------------------------------------------

    def seen_chunk(self, key: str) -> bool:
        """True when a record holding this key is already durable (chunk_ids.py)."""
        return self.keys.seen(key)

    def inflight_chunk(self, key: str) -> asyncio.Future[int] | None:
        """The commit a key is waiting for, if another connection is spooling it."""
        return self.keys.inflight(key)

    async def append(self, events: list[bytes], keys: list[str] | None = None) -> int:
        """Spool events (their canonical bytes) and the batch's keys durably; returns the
        record number once fsynced. The keys are registered as in flight before the
        first await, so a concurrent batch sees them.
        """
        if self._closed:
            raise SpoolFull("the spool is closed (shutting down)")
        if self.commits.broken:
            raise SpoolWriteFailed(
                f"the spool disk failed ({self.commits.broken}); restart the collector"
            )
        digests = [chunk_ids.digest(k) for k in keys or ()]
        payload = pack_encoded(digests, time.time_ns(), events)
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
        return await self.commits.add(payload, digests)

    async def wait_committed(self, after: int, wait_seconds: float | None = None) -> bool:
        """Wait until a record numbered above `after` is durable (or the timeout)."""
        return await self.commits.wait_committed(after, wait_seconds)

    async def flush(self) -> None:
        """Wait for every pending append to be durable."""
        await self.commits.flush()

    # --- shipping side ----------------------------------------------------------

    def reader(self, after: int) -> SpoolReader:
        return SpoolReader(self.state, after)

    def join_stream(self, next_seq: int, epoch: int) -> None:
        """Record where a fresh spool joined the ledger stream (before shipping anything)."""
        self.releases.join_stream(next_seq, epoch)

    def release(self, number: int, next_seq: int, epoch: int) -> None:
        """Records up to `number` are stored under lock, up to ledger `next_seq` of
        `epoch` (release.py); the space counts as free at once."""
        self.releases.release(number, next_seq, epoch)

    async def settle(self) -> None:
        """Wait until every release is persisted (state file written, files deleted)."""
        await self.releases.settle()

    def close(self) -> None:
        self._closed = True
        self._room.set()
        self.state.close_tail()
