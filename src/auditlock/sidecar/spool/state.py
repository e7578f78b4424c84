"""What the parts of the spool share: the segment files and where the records stand.

`SpoolState` is plain bookkeeping, owned by `Spool` and handed to each part (group
commit, release, readers); only the part named beside a field changes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from auditlock.sidecar.spool.recovery import SegmentInfo, segment_name
from auditlock.sidecar.spool.unreleased import Unreleased


@dataclass
class SpoolState:
    directory: Path
    segment_bytes: int
    segments: list[SegmentInfo] = field(default_factory=list)  # oldest first; the last is the tail
    tail_fd: int | None = None  # the tail segment, written with pwrite (group commit)
    committed: int = 0  # highest record number fsynced or known lost (group commit)
    released: int = 0  # highest record number stored under lock (release)
    # The ledger position right after the released records: the writer's next_seq and
    # epoch. None until the first start has recorded where this spool joined the stream.
    released_next_seq: int | None = None
    released_epoch: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # record numbers known lost
    unreleased: Unreleased = field(default_factory=lambda: Unreleased(0))  # size, time each
    oldest_unreleased_ns: int | None = None

    def open_tail(self) -> None:
        tail = self.segments[-1] if self.segments else None
        if tail is not None and tail.last == self.committed and tail.size < self.segment_bytes:
            self.tail_fd = os.open(tail.path, os.O_WRONLY)
        else:
            self.segments.append(self.create_segment(self.committed + 1))

    def create_segment(self, first: int) -> SegmentInfo:
        """A new, empty tail file (blocking: called in a worker thread or at open)."""
        path = self.directory / segment_name(first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            raise
        if self.tail_fd is not None:
            os.close(self.tail_fd)
        self.tail_fd = fd
        return SegmentInfo(first, path, 0, first - 1)

    def update_oldest(self) -> None:
        self.oldest_unreleased_ns = self.unreleased.oldest_ns()

    def close_tail(self) -> None:
        if self.tail_fd is not None:
            os.close(self.tail_fd)
            self.tail_fd = None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
