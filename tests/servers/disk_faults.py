"""Real disk faults for spool tests: a small tmpfs that fills up, and RLIMIT_FSIZE.

`small_tmpfs(path, size)` mounts a tmpfs of `size` bytes at `path` (needs root, as the
test machines and CI run) and `fill(path, leave)` takes all but `leave` bytes of it
with a filler file, which `unfill` removes: ENOSPC on demand, then recovery.
`fsize_limit(nbytes)` is a preexec_fn setting RLIMIT_FSIZE in a child process (writes
past it fail with EFBIG); `resource.prlimit(pid, ...)` lifts it again from outside.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FILLER = ".filler"


@contextmanager
def small_tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.fail("disk-fault tests mount a tmpfs and need root (CI runs them as root)")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path, leave: int) -> None:
    """Take the free space of the file system at `path`, all but `leave` bytes."""
    stat = os.statvfs(path)
    wanted = max(0, stat.f_bavail * stat.f_frsize - leave)
    block = b"\0" * (1024 * 1024)
    # The collector under test may write between statvfs and here: running out of space
    # early means the file system is already as full as asked (fuller, by its writes).
    with open(path / FILLER, "ab", buffering=0) as handle:
        while wanted > 0:
            try:
                wanted -= handle.write(block[: min(wanted, len(block))])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
        os.fsync(handle.fileno())


def unfill(path: Path) -> None:
    (path / FILLER).unlink(missing_ok=True)


def fsize_limit(nbytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))

    return apply


def lift_fsize_limit(pid: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
