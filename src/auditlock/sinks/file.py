"""file://DIR - a directory as a destination, for development and demos. Not WORM.

Layout under DIR:

    <name>                      the object's bytes, mode 0444 (names may contain '/')
    .retention/<name>.json      {"mode", "retain_until", "legal_hold", "written_at"}, 0444
    .tmp/                       partially written files; never listed, safe to delete

A write is atomic and never overwrites: the bytes go to a temp file in `.tmp/` (same
filesystem) and the retention record to a temp name beside its own, both are fsynced,
then each is hard-linked to its final name (`link` fails if the name exists, so two
racing writers cannot clobber each other), the temp names are removed and the
directories are fsynced. A crash leaves either no object or the whole object.

Reading treats the directory as possibly hostile: only regular files inside it are read
(no symlink is followed below DIR, a FIFO or device is refused without blocking), and a
caller's size cap is enforced while reading.

Read-only file modes and the retention metadata record intent only: anyone who can write
to DIR can delete or replace files. `check` says so.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from auditlock.sinks.base import (
    CheckReport,
    Destination,
    DestinationError,
    LockMode,
    ObjectConflict,
    ObjectNotFound,
    ObjectRetention,
    ObjectUnreadable,
    PutResult,
    RetentionSpec,
    same_bytes_or_conflict,
)
from auditlock.sinks.naming import validate_name

RETENTION_DIR = ".retention"
TMP_DIR = ".tmp"
_RESERVED = (RETENTION_DIR, TMP_DIR)
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH  # 0o444
# A retention record is one small JSON object (see _record_retention).
MAX_RETENTION_RECORD_BYTES = 4096
_READ_CHUNK = 1024 * 1024
# Opening a store path: never through a symlink (the store may be hostile: a link to
# /etc/passwd or /dev/zero), never blocking (a FIFO opened for reading waits for a writer).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Linux starts writing a file's dirty pages back on this advice (see _write_files).
_START_WRITEBACK: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)

NOT_WORM_NOTICE = (
    "file:// is not WORM storage: files are made read-only and retention is only recorded "
    "in .retention/ metadata, so anyone with write access to the directory can delete or "
    "change them; use it for development and demos, never for an audit trail."
)


def path_from_url(url: str) -> Path:
    """file:///abs/dir, file://localhost/abs/dir, or file://rel/dir (relative to cwd)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise DestinationError(f"not a file:// URL: {url!r}")
    if parts.query or parts.fragment:
        raise DestinationError(f"file:// URL takes no query or fragment: {url!r}")
    netloc = "" if parts.netloc in ("", "localhost") else parts.netloc
    raw = unquote(netloc + parts.path)
    if not raw:
        raise DestinationError(f"file:// URL names no directory: {url!r}")
    return Path(raw)


class FileDestination(Destination):
    def __init__(self, url: str, *, fsync: bool = True) -> None:
        self.url = url
        self.root = path_from_url(url)
        self._fsync = fsync  # tests and benchmarks may turn it off; durability needs it on

    # -- writing ---------------------------------------------------------------------

    def put(self, name: str, data: bytes, retention: RetentionSpec | None) -> PutResult:
        target = self._path(name)
        existing = self._existing(name, data)
        if existing is not None:
            return self._already_there(name, target, existing, data, retention)
        try:
            self._make_dirs(target.parent)
            tmp_dir = self.root / TMP_DIR
            tmp_dir.mkdir(exist_ok=True)
            tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
            files = [(tmp, data)]
            record = None
            if retention is not None:
                record = _RetentionRecord(self._meta_path(name), retention)
                self._make_dirs(record.path.parent)
                files.append((record.tmp, record.data))
            try:
                # Both files' bytes are made durable together, before either name exists.
                self._write_files(files)
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    # Another writer got there between our check and our link.
                    existing = self._existing(name, data) or b""
                    return self._already_there(name, target, existing, data, retention)
                if record is not None:
                    record.link()
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                if record is not None:
                    record.discard_tmp()
            # A crash before these fsyncs may keep one name without the other: an object
            # without its record is healed by a retry (_already_there), and a record
            # without its object is kept by the retry's put (records are never replaced).
            self._sync_dir(target.parent)
            recorded = None
            if record is not None:
                self._sync_dir(record.path.parent)
                recorded = record.recorded if record.created else self._read_retention(name)
        except OSError as exc:
            raise DestinationError(f"cannot write {name!r} under {self.root}: {exc}") from exc
        return PutResult(name=name, size=len(data), created=True, retention=recorded)

    def _existing(self, name: str, data: bytes) -> bytes | None:
        """What is stored under `name`, read only as far as a comparison with `data` needs."""
        try:
            return self._read_if_exists(name, max_bytes=len(data))
        except ObjectUnreadable as exc:
            raise ObjectConflict(
                f"{name!r} already exists in {self.root} and is not these bytes ({exc}); "
                "refusing to overwrite - this is a bug or tampering"
            ) from None

    def _already_there(
        self,
        name: str,
        target: Path,
        existing: bytes,
        data: bytes,
        retention: RetentionSpec | None,
    ) -> PutResult:
        same_bytes_or_conflict(f"{name!r} in {self.root}", existing, data)
        # Same bytes: an idempotent retry. Heal metadata lost to a crash after the link.
        recorded = self._read_retention(name)
        if recorded is None:
            recorded = self._record_retention(name, retention)
        return PutResult(name=name, size=len(data), created=False, retention=recorded)

    def _record_retention(self, name: str, spec: RetentionSpec | None) -> ObjectRetention | None:
        if spec is None:
            return None
        record = _RetentionRecord(self._meta_path(name), spec)
        self._make_dirs(record.path.parent)
        try:
            self._write_files([(record.tmp, record.data)])
            record.link()
        finally:
            record.discard_tmp()
        self._sync_dir(record.path.parent)
        return record.recorded if record.created else self._read_retention(name)

    def _write_files(self, files: builtins.list[tuple[Path, bytes]]) -> None:
        """Create each file with its bytes, durably (unless fsync is off), read-only.

        Writeback of every file starts before the first fsync, so on a journaling file
        system (ext4) that fsync's journal commit covers all of them and the others find
        nothing left to commit: one commit per put instead of one per file. Each file is
        still fsynced, which is what durability rests on."""
        fds: builtins.list[int] = []
        try:
            for path, data in files:
                fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                view = memoryview(data)
                while view:
                    written = os.write(fds[-1], view)
                    view = view[written:]
            if self._fsync:
                if len(fds) > 1 and _START_WRITEBACK is not None:
                    for fd in fds:
                        os.posix_fadvise(fd, 0, 0, _START_WRITEBACK)
                for fd in fds:
                    os.fsync(fd)
            for fd in fds:
                os.fchmod(fd, _READ_ONLY)
        finally:
            for fd in fds:
                os.close(fd)

    def _make_dirs(self, directory: Path) -> None:
        """mkdir -p, fsyncing each parent whose entries changed."""
        missing: list[Path] = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):
                new.mkdir()
            self._sync_dir(new.parent)

    def _sync_dir(self, directory: Path) -> None:
        if not self._fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------

    def get(self, name: str, max_bytes: int | None = None) -> bytes:
        data = self._read_if_exists(name, max_bytes=max_bytes)
        if data is None:
            raise ObjectNotFound(f"no object {name!r} in {self.root}")
        return data

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the directory the prefix names (`streams/s/` walks one stream), so a
        # writer listing its own stream costs the same in a store of one stream or of
        # thousands (`auditlock synth --streams N` is linear in N because of this).
        top = prefix.rpartition("/")[0]
        if top.split("/", 1)[0] in _RESERVED:
            return iter(())
        start = self.root.joinpath(*top.split("/")) if top else self.root
        names: list[str] = []
        if start.is_dir():
            for dirpath, dirnames, filenames in os.walk(start):
                rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                if rel_dir == ".":
                    dirnames[:] = [d for d in dirnames if d not in _RESERVED]
                    rel_dir = ""
                # A symlink to a directory is listed as a name of its own (never walked
                # into): the caller then sees it, and reading it is refused.
                links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
                dirnames[:] = sorted(d for d in dirnames if d not in links)
                for filename in [*filenames, *links]:
                    rel = f"{rel_dir}/{filename}" if rel_dir else filename
                    if rel.startswith(prefix):
                        names.append(rel)
        return iter(sorted(names))

    def retention(self, name: str) -> ObjectRetention:
        try:
            fd = self._open_regular(self._parts(name))
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {name!r} in {self.root}") from None
        os.close(fd)
        recorded = self._read_retention(name)
        return recorded if recorded is not None else ObjectRetention(mode=None, retain_until=None)

    def _read_retention(self, name: str) -> ObjectRetention | None:
        parts = [RETENTION_DIR, *name.split("/")]
        parts[-1] += ".json"
        where = "/".join(parts)
        try:
            fd = self._open_regular(parts)
        except FileNotFoundError:
            return None
        try:
            raw = _read_capped(fd, MAX_RETENTION_RECORD_BYTES, where)
        finally:
            os.close(fd)
        try:
            record: Any = orjson.loads(raw)  # bounded depth; never recurses in Python
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")
            written = record.get("written_at")
            return ObjectRetention(
                mode=LockMode(record["mode"]),
                retain_until=datetime.fromisoformat(_text(record["retain_until"])),
                legal_hold=record.get("legal_hold", False) is True,
                written_at=datetime.fromisoformat(_text(written)) if written else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DestinationError(f"retention metadata {where} is unreadable: {exc}") from None

    def _read_if_exists(self, name: str, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes, None if there is none; ObjectUnreadable if it is not a
        regular file inside the store or is larger than `max_bytes`."""
        try:
            fd = self._open_regular(self._parts(name))
        except FileNotFoundError:
            return None
        try:
            return _read_capped(fd, max_bytes, name)
        finally:
            os.close(fd)

    def _parts(self, name: str) -> builtins.list[str]:
        self._path(name)  # validates the name
        return name.split("/")

    def _open_regular(self, parts: builtins.list[str]) -> int:
        """A read-only fd of the regular file root/parts..., walking each component with
        O_NOFOLLOW from a descriptor of the root. FileNotFoundError if nothing is there;
        ObjectUnreadable for a symlink, FIFO, device or socket."""
        where = "/".join(parts)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(where) from None  # no store yet: no object either
        except OSError as exc:
            raise DestinationError(f"cannot open {self.root}: {exc.strerror or exc}") from None
        try:
            for part in parts[:-1]:
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
            target = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                # ENOTDIR: a path component is a file, or a symlink we refused to follow
                # to a directory; the former is simply "no such object".
                if exc.errno == errno.ENOTDIR and self._is_link_on_path(parts):
                    raise ObjectUnreadable(
                        f"{where}: a directory on its path is a symbolic link; only regular "
                        "files inside the store are read"
                    ) from None
                raise FileNotFoundError(where) from None
            if exc.errno == errno.ELOOP:
                raise ObjectUnreadable(
                    f"{where}: it or a directory on its path is a symbolic link; only "
                    "regular files inside the store are read"
                ) from None
            raise DestinationError(f"cannot open {where} in {self.root}: {exc}") from None
        finally:
            os.close(fd)
        kind = stat.S_IFMT(os.fstat(target).st_mode)
        if kind == stat.S_IFDIR:  # a directory is not an object (names are files)
            os.close(target)
            raise FileNotFoundError(where)
        if kind != stat.S_IFREG:
            os.close(target)
            raise ObjectUnreadable(
                f"{where} is {_KINDS.get(kind, 'of an unknown kind')}, not a regular file; "
                "only regular files inside the store are read"
            )
        return target

    def _is_link_on_path(self, parts: builtins.list[str]) -> bool:
        path = self.root
        for part in parts[:-1]:
            path = path / part
            if path.is_symlink():
                return True
        return False

    # -- checking --------------------------------------------------------------------

    def check(self, required: RetentionSpec) -> CheckReport:
        facts: dict[str, Any] = {"path": str(self.root), "exists": self.root.is_dir()}
        problems: list[str] = []
        # The nearest existing ancestor decides whether we could create and write DIR.
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        facts["writable"] = probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
        if self.root.exists() and not self.root.is_dir():
            problems.append(f"{self.root} exists and is not a directory.")
        elif not facts["writable"]:
            problems.append(f"{self.root} is not writable by this process (checked {probe}).")
        facts["retention_recorded_as"] = f"{RETENTION_DIR}/<name>.json"
        facts["required_period_days"] = required.period.total_seconds() / 86400
        return CheckReport(
            url=self.url,
            ok=not problems,
            worm=False,
            facts=facts,
            problems=problems,
            notices=[NOT_WORM_NOTICE],
        )

    # -- names -----------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        validate_name(name)
        if name.split("/", 1)[0] in _RESERVED:
            raise DestinationError(f"object name {name!r} uses a reserved directory of file://")
        return self.root.joinpath(*name.split("/"))

    def _meta_path(self, name: str) -> Path:
        parts = name.split("/")
        parts[-1] += ".json"
        return self.root.joinpath(RETENTION_DIR, *parts)


class _RetentionRecord:
    """The retention record of one put: `.retention/<name>.json`, written to a temp name
    beside it and linked, never replacing a record already there."""

    def __init__(self, path: Path, spec: RetentionSpec) -> None:
        now = datetime.now(UTC)
        until = spec.retain_until(now)
        self.path = path
        self.tmp = path.with_name(path.name + f".{uuid.uuid4().hex}.part")
        self.data = orjson.dumps(
            {
                "mode": spec.mode.value,
                "retain_until": until.isoformat(),
                "legal_hold": spec.legal_hold,
                "written_at": now.isoformat(),
            },
            option=orjson.OPT_SORT_KEYS,
        )
        # What the record says, exactly as `_read_retention` parses it back.
        self.recorded = ObjectRetention(spec.mode, until, spec.legal_hold is True, now)
        self.created = False

    def link(self) -> None:
        try:
            os.link(self.tmp, self.path)
            self.created = True
        except FileExistsError:
            pass  # another writer's record stands

    def discard_tmp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _read_capped(fd: int, max_bytes: int | None, where: str) -> bytes:
    """Read fd to its end; ObjectUnreadable as soon as it passes max_bytes (the size the
    file claims is checked first, and the read is capped anyway: a file may grow)."""
    if max_bytes is not None and os.fstat(fd).st_size > max_bytes:
        raise ObjectUnreadable(f"{where} is larger than {max_bytes} bytes (not read)")
    chunks: list[bytes] = []
    size = 0
    limit = max_bytes + 1 if max_bytes is not None else None
    while True:
        want = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit - size)
        chunk = os.read(fd, want) if want > 0 else b""
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if max_bytes is not None and size > max_bytes:
        raise ObjectUnreadable(f"{where} is larger than {max_bytes} bytes (not read)")
    return b"".join(chunks)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, found a JSON {type(value).__name__}")
    return value
