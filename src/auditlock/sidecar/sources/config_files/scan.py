"""One scan of the watched config paths: which files are there and their SHA-256.

A watched folder is input the collector does not control (an app, or whoever writes the
ConfigMap, can put anything in it), so the scan trusts nothing it finds:

- Only regular files are read. A FIFO, socket or device is never opened; it is
  reported as skipped (`not_regular`). Files are opened with O_NONBLOCK and O_NOFOLLOW
  and checked again with fstat, so a file swapped for a FIFO between the check and the
  open cannot block the scan.
- A symlink is followed only when its target resolves inside the watched volume (the
  watched directory, or a watched file's directory). Kubernetes ConfigMap and Secret
  volumes are made of such links (`name -> ..data/name`, `..data -> ..2026_...`), so they
  keep working; `-> /etc/shadow` or `-> /dev/zero` is reported as `outside_volume` and
  never opened. After the open, the file's real path (/proc/self/fd) is checked again,
  which closes the race of a directory swapped between the check and the open.
- The collector's own signing key and spool are never read (`collector_private`), by
  path and by inode.
- A directory is scanned once: a link back to a directory already scanned (`a -> .`)
  is reported as `directory_revisited` instead of being walked again.
- At most `max_files` entries (files and directories) are examined per watched path and
  scan, and a file
  larger than `max_file_bytes` is not hashed (`too_large`); past the count cap the scan
  stops and the watched path is reported as `file_limit`. That bounds the scan's memory
  and time whatever the folder holds.
- The scan runs in a worker thread and checks a stop flag between files and between
  blocks, so shutdown never waits for a scan.

Each skipped entry is kept in the snapshot as `{"skipped": reason}`; the watcher turns a
new or changed reason into a `config.file.skipped` event, a log line and a metric.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditlock.ledger.value_hash import hasher

Entry = dict[str, Any]  # {"sha256", "size", "revision"?} or {"skipped": reason, ...}
Snapshot = dict[str, Entry]  # watched path (as the app sees it) -> entry

BLOCK = 1 << 16
# O_NONBLOCK: a FIFO swapped in after the check cannot block the open.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY

# Why an entry was not hashed (the `reason` of a config.file.skipped event).
NOT_REGULAR = "not_regular"
OUTSIDE_VOLUME = "outside_volume"
SYMLINK_LOOP = "symlink_loop"
COLLECTOR_PRIVATE = "collector_private"
DIRECTORY_REVISITED = "directory_revisited"
TOO_LARGE = "too_large"
FILE_LIMIT = "file_limit"
UNREADABLE = "unreadable"
REASONS = (
    NOT_REGULAR,
    OUTSIDE_VOLUME,
    SYMLINK_LOOP,
    COLLECTOR_PRIVATE,
    DIRECTORY_REVISITED,
    TOO_LARGE,
    FILE_LIMIT,
    UNREADABLE,
)


class Stopped(Exception):
    """The scan was asked to stop (the collector is shutting down)."""


@dataclass(frozen=True, slots=True)
class _Private:
    """The collector's own files as they are now (a Secret update changes the inode)."""

    inodes: frozenset[tuple[int, int]]
    paths: tuple[str, ...]  # real paths: a file, or a directory and everything under it

    @classmethod
    def of(cls, paths: list[Path]) -> _Private:
        inodes: set[tuple[int, int]] = set()
        real: list[str] = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            inodes.add((st.st_dev, st.st_ino))
            real.append(os.path.realpath(path))
        return cls(frozenset(inodes), tuple(real))

    def holds(self, real: str, st: os.stat_result) -> bool:
        if (st.st_dev, st.st_ino) in self.inodes:
            return True
        return any(_inside(real, p) for p in self.paths)


def _inside(path: str, boundary: str) -> bool:
    if boundary == "/":
        return path.startswith("/")
    return path == boundary or path.startswith(boundary + os.sep)


class Scanner:
    """Hashes the files under the watched paths; caches by (device, inode, size, mtime)."""

    def __init__(
        self,
        paths: list[str],
        *,
        max_files: int = 10_000,
        max_file_bytes: int = 8 * 1024 * 1024,
        private: list[Path] | None = None,
    ) -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.private = list(private or [])
        self._cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}

    def scan(self, stop: threading.Event | None = None) -> Snapshot:
        """Raises Stopped when `stop` is set before the scan ends."""
        run = _Scan(self, self._cache, stop or threading.Event())
        for root in self.paths:
            run.root(root)
        self._cache = run.cache  # only what exists now: renamed files do not pile up
        return run.out


class _Scan:
    def __init__(
        self,
        scanner: Scanner,
        previous: dict[str, tuple[tuple[int, int, int, int], str]],
        stop: threading.Event,
    ) -> None:
        self.scanner = scanner
        self.previous = previous
        self.stop = stop
        self.private = _Private.of(scanner.private)
        self.budget = 0
        self.out: Snapshot = {}
        self.cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self.visited: set[tuple[int, int]] = set()

    def root(self, root: str) -> None:
        try:
            st = os.stat(root)
        except FileNotFoundError:
            return  # not mounted (yet): nothing to report
        except OSError as exc:
            self.skip(root, UNREADABLE, error=exc.strerror)
            return
        real = os.path.realpath(root)
        if self.private.holds(real, st):
            self.skip(root, COLLECTOR_PRIVATE)
        elif stat.S_ISDIR(st.st_mode):
            self.walk(root, real, st)
        else:
            volume = os.path.realpath(os.path.dirname(root))
            if not _inside(real, volume):
                self.skip(root, OUTSIDE_VOLUME)
                return
            self.entry(root, real, st, volume, _revision(os.path.dirname(root)))

    def walk(self, root: str, real_root: str, st: os.stat_result) -> None:
        revision = _revision(root)
        self.budget = self.scanner.max_files  # per watched path: one cannot starve another
        self.visited.add((st.st_dev, st.st_ino))
        # An explicit stack, not recursion: a deep tree cannot exhaust the Python stack.
        stack = [(root, real_root)]
        while stack:
            shown, real_dir = stack.pop()
            try:
                listing = os.scandir(real_dir)
            except FileNotFoundError:
                continue  # removed during the scan: the next scan sees the result
            except OSError as exc:
                self.skip(shown, UNREADABLE, error=exc.strerror)
                continue
            # The kubelet's `..data` and timestamped directories are reached through the
            # visible links; elsewhere a `..name` is an ordinary file and is watched.
            kubelet_volume = os.path.islink(os.path.join(real_dir, "..data"))
            with listing:
                for item in listing:
                    if kubelet_volume and item.name.startswith(".."):
                        continue
                    if self.stop.is_set():
                        raise Stopped
                    if self.budget <= 0:
                        self.skip(root, FILE_LIMIT, limit=self.scanner.max_files)
                        return
                    self.budget -= 1
                    child = f"{shown}/{item.name}"
                    found = self.resolve(child, item, real_root)
                    if found is None:
                        continue
                    target, target_st = found
                    if self.private.holds(target, target_st):
                        self.skip(child, COLLECTOR_PRIVATE)
                    elif stat.S_ISDIR(target_st.st_mode):
                        key = (target_st.st_dev, target_st.st_ino)
                        if key in self.visited:
                            self.skip(child, DIRECTORY_REVISITED)
                        else:
                            self.visited.add(key)
                            stack.append((child, target))
                    else:
                        self.entry(child, target, target_st, real_root, revision)

    def resolve(
        self, shown: str, item: os.DirEntry[str], volume: str
    ) -> tuple[str, os.stat_result] | None:
        """The real path and stat of a listed entry, or None when it is skipped/absent."""
        try:
            if not item.is_symlink():
                return item.path, item.stat(follow_symlinks=False)
            target = os.path.realpath(item.path, strict=True)
            if not _inside(target, volume):
                self.skip(shown, OUTSIDE_VOLUME)
                return None
            return target, os.stat(target, follow_symlinks=False)
        except FileNotFoundError:
            return None  # dangling or removed meanwhile (a ConfigMap swap): absent
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.skip(shown, SYMLINK_LOOP)
            else:
                self.skip(shown, UNREADABLE, error=exc.strerror)
            return None

    def entry(
        self, shown: str, real: str, st: os.stat_result, volume: str, revision: str | None
    ) -> None:
        if not stat.S_ISREG(st.st_mode):
            self.skip(shown, NOT_REGULAR)
            return
        if st.st_size > self.scanner.max_file_bytes:
            self.skip(shown, TOO_LARGE, size=st.st_size)
            return
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self.previous.get(shown)
        if cached is not None and cached[0] == key:
            digest, size = cached[1], st.st_size
        else:
            try:
                hashed, size, key = self.hash(shown, real, volume)
            except FileNotFoundError:
                return
            except OSError as exc:
                self.skip(shown, UNREADABLE, error=exc.strerror)
                return
            if hashed is None:
                return  # hash() recorded why
            digest = hashed
        self.cache[shown] = (key, digest)
        found: Entry = {"sha256": digest, "size": size}
        if revision:
            found["revision"] = revision
        self.out[shown] = found

    def hash(
        self, shown: str, real: str, volume: str
    ) -> tuple[str | None, int, tuple[int, int, int, int]]:
        fd = os.open(real, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            # What was opened, not what was checked: a path swapped in between is caught.
            opened = _fd_path(fd)
            if opened is not None and not _inside(opened, volume):
                self.skip(shown, OUTSIDE_VOLUME)
                return None, 0, key
            if self.private.holds(opened or real, st):
                self.skip(shown, COLLECTOR_PRIVATE)
                return None, 0, key
            if not stat.S_ISREG(st.st_mode):
                self.skip(shown, NOT_REGULAR)
                return None, 0, key
            # Config files are hashed unkeyed, so anyone can check a file against the trail
            # (docs/threat-model.md: do not watch files holding guessable secrets).
            digest = hasher()
            size = 0
            limit = self.scanner.max_file_bytes
            while block := os.read(fd, BLOCK):
                size += len(block)
                if size > limit:
                    self.skip(shown, TOO_LARGE, size=size)
                    return None, 0, key
                digest.update(block)
                if self.stop.is_set():
                    raise Stopped
            return digest.hexdigest(), size, key
        finally:
            os.close(fd)

    def skip(self, shown: str, reason: str, **details: Any) -> None:
        self.out[shown] = {"skipped": reason, **details}


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # no /proc (not Linux): the realpath check before the open stands


def _revision(directory: str) -> str | None:
    """The `..data` target of a ConfigMap/Secret volume (its revision), if it is one."""
    try:
        return os.readlink(os.path.join(directory, "..data"))
    except OSError:
        return None
