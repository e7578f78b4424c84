"""Release: records stored under lock give their space back, and their files go.

`release(number, next_seq, epoch)` marks every record up to `number` as stored under
lock (a stored checkpoint covers ledger seqs below `next_seq` of `epoch`). Memory is
updated at once (the space counts as free); the state file and the deletion of fully
released segment files follow in a worker thread, in that order, so the event loop never
waits for their fsyncs. A deleted file's chunk ids move to `chunk-ids.log` first, so a
retransmitted chunk is still recognised after a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from auditlock.sidecar.spool import chunk_ids
from auditlock.sidecar.spool.records import BadRecord, chunks_at
from auditlock.sidecar.spool.recovery import STATE_NAME, SegmentInfo
from auditlock.sidecar.spool.state import SpoolState, fsync_dir

log = logging.getLogger("auditlock.sidecar.spool")


class Release:
    def __init__(self, state: SpoolState, chunk_memory: int, on_room: Callable[[], None]) -> None:
        self.state = state
        self.chunk_memory = chunk_memory
        self.on_room = on_room  # released space may let waiting appends in
        self._doomed: list[SegmentInfo] = []  # released segment files not yet deleted
        self._persister: asyncio.Task[None] | None = None

    def join_stream(self, next_seq: int, epoch: int) -> None:
        """Record where a fresh spool joined the ledger stream (before shipping anything)."""
        self.state.released_next_seq = next_seq
        self.state.released_epoch = epoch
        self.write_state()

    def release(self, number: int, next_seq: int, epoch: int) -> None:
        state = self.state
        if number <= state.released and next_seq == state.released_next_seq:
            return
        state.released = max(state.released, number)
        state.released_next_seq = next_seq
        state.released_epoch = epoch
        state.gaps = [g for g in state.gaps if g[1] > state.released]
        state.unreleased.release(number)
        state.update_oldest()
        self._doomed.extend(self.take_released_segments())
        self.on_room()
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
        state = self.state
        return {
            "released": state.released,
            "next_seq": state.released_next_seq,
            "epoch": state.released_epoch,
            "gaps": [list(g) for g in state.gaps if g[1] > state.released],
        }

    def _persist(self, state: dict[str, Any], doomed: list[SegmentInfo]) -> None:
        # State first: a crash after it and before the deletions only leaves released
        # files behind, which the next open() deletes. The reverse order could lose data.
        # With no file to delete, the new state need not survive a crash: the previous
        # one says less is released, and resuming skips the events the destination
        # already holds (shipping.py), so the directory's fsync waits for a deletion.
        self.write_state(state, durable=bool(doomed))
        self.delete_segments(doomed)

    def write_state(self, state: dict[str, Any] | None = None, durable: bool = True) -> None:
        """Replace state.json atomically; `durable`: the replacement survives a crash."""
        directory = self.state.directory
        path = directory / STATE_NAME
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(state or self._state(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(directory)

    def take_released_segments(self) -> list[SegmentInfo]:
        # Never the tail segment: it is the one being appended to.
        segments = self.state.segments
        taken = []
        while len(segments) > 1 and segments[0].last <= self.state.released:
            taken.append(segments.pop(0))
        return taken

    def delete_segments(self, segments: list[SegmentInfo]) -> None:
        """Move the chunk ids of released files to the log (fsynced), then delete them."""
        directory = self.state.directory
        for segment in segments:
            chunk_ids.append_log(directory, _segment_chunks(segment))
            segment.path.unlink(missing_ok=True)
        if segments:
            chunk_ids.compact_log(directory, self.chunk_memory)


def _segment_chunks(segment: SegmentInfo) -> list[bytes]:
    """The chunk id digests held in a segment file (read in a worker thread): only each
    record's header and ids are read, as every record was read whole before its release."""
    out: list[bytes] = []
    try:
        fd = os.open(segment.path, os.O_RDONLY)
    except FileNotFoundError:
        return out  # deleted by an earlier attempt, after its ids were logged
    try:
        offset = 0
        while offset < segment.size:
            try:
                size, chunks = chunks_at(fd, offset, segment.size)
            except BadRecord as exc:
                log.error("%s at byte %d: %s; its chunk ids are lost", segment.path, offset, exc)
                break
            out.extend(chunks)
            offset += size
    finally:
        os.close(fd)
    return out
