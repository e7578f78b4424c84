"""file://DIR - a directory as a destination, for development and demos. Not WORM.

Layout under DIR:

    <name>                      the object's bytes, mode 0444 (names may contain '/')
    .retention/<name>.json      {"mode", "retain_until", "legal_hold", "written_at"}, 0444
    .tmp/                       partially written files; never listed, safe to delete

A write is atomic and never overwrites: the bytes go to a temp file in `.tmp/` (same
filesystem), are fsynced, then hard-linked to the final name (`link` fails if the name
exists, so two racing writers cannot clobber each other), the temp name is removed and
the directories are fsynced. A crash leaves either no object or the whole object.

Read-only file modes and the retention metadata record intent only: anyone who can write
to DIR can delete or replace files. `check` says so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from auditlock.sinks.base import (
    CheckReport,
    Destination,
    DestinationError,
    LockMode,
    ObjectConflict,
    ObjectNotFound,
    ObjectRetention,
    PutResult,
    RetentionSpec,
)
from auditlock.sinks.naming import validate_name

RETENTION_DIR = ".retention"
TMP_DIR = ".tmp"
_RESERVED = (RETENTION_DIR, TMP_DIR)
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH  # 0o444

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
        existing = self._read_if_exists(target)
        if existing is not None:
            return self._already_there(name, target, existing, data, retention)
        try:
            self._make_dirs(target.parent)
            tmp_dir = self.root / TMP_DIR
            tmp_dir.mkdir(exist_ok=True)
            tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
            self._write_file(tmp, data)
            try:
                os.link(tmp, target)
            except FileExistsError:
                # Another writer got there between our check and our link.
                existing = target.read_bytes()
                return self._already_there(name, target, existing, data, retention)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            self._sync_dir(target.parent)
            recorded = self._record_retention(name, retention)
        except OSError as exc:
            raise DestinationError(f"cannot write {name!r} under {self.root}: {exc}") from exc
        return PutResult(name=name, size=len(data), created=True, retention=recorded)

    def _already_there(
        self,
        name: str,
        target: Path,
        existing: bytes,
        data: bytes,
        retention: RetentionSpec | None,
    ) -> PutResult:
        if existing != data:
            raise ObjectConflict(
                f"{name!r} already exists in {self.root} with different bytes "
                f"({len(existing)} stored, {len(data)} offered); refusing to overwrite - "
                "this is a bug or tampering"
            )
        # Same bytes: an idempotent retry. Heal metadata lost to a crash after the link.
        recorded = self._read_retention(name)
        if recorded is None:
            recorded = self._record_retention(name, retention)
        return PutResult(name=name, size=len(data), created=False, retention=recorded)

    def _record_retention(self, name: str, spec: RetentionSpec | None) -> ObjectRetention | None:
        if spec is None:
            return None
        now = datetime.now(UTC)
        record = {
            "mode": spec.mode.value,
            "retain_until": spec.retain_until(now).isoformat(),
            "legal_hold": spec.legal_hold,
            "written_at": now.isoformat(),
        }
        meta = self._meta_path(name)
        self._make_dirs(meta.parent)
        tmp = meta.with_name(meta.name + f".{uuid.uuid4().hex}.part")
        self._write_file(tmp, json.dumps(record, sort_keys=True).encode())
        try:
            os.link(tmp, meta)  # never replace a retention record once written
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        self._sync_dir(meta.parent)
        return self._read_retention(name)

    def _write_file(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(fd)
            os.fchmod(fd, _READ_ONLY)
        finally:
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

    def get(self, name: str) -> bytes:
        data = self._read_if_exists(self._path(name))
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
                dirnames.sort()
                for filename in filenames:
                    rel = f"{rel_dir}/{filename}" if rel_dir else filename
                    if rel.startswith(prefix):
                        names.append(rel)
        return iter(sorted(names))

    def retention(self, name: str) -> ObjectRetention:
        if not self._path(name).is_file():
            raise ObjectNotFound(f"no object {name!r} in {self.root}")
        recorded = self._read_retention(name)
        return recorded if recorded is not None else ObjectRetention(mode=None, retain_until=None)

    def _read_retention(self, name: str) -> ObjectRetention | None:
        meta = self._meta_path(name)
        try:
            record: dict[str, Any] = json.loads(meta.read_bytes())
            return ObjectRetention(
                mode=LockMode(record["mode"]),
                retain_until=datetime.fromisoformat(record["retain_until"]),
                legal_hold=bool(record.get("legal_hold", False)),
                written_at=(
                    datetime.fromisoformat(record["written_at"])
                    if record.get("written_at")
                    else None
                ),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise DestinationError(f"retention metadata {meta} is unreadable: {exc}") from exc

    def _read_if_exists(self, path: Path) -> bytes | None:
        """The bytes of the regular file at `path`; None if there is none (or a directory).

        An object is a regular file: a symlink (which could point anywhere, or change
        after verification), a FIFO (reading it would block forever), a socket or a
        device under an object's name is refused, not followed (docs/FORMAT.md, "Objects")."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ObjectNotFound(f"{path} is a symbolic link, not an object") from exc
            raise DestinationError(f"cannot read {path}: {exc}") from exc
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                return None
            if not stat.S_ISREG(mode):
                raise ObjectNotFound(f"{path} is not a regular file, not an object")
            with open(fd, "rb", closefd=False) as handle:
                return handle.read()
        except OSError as exc:
            raise DestinationError(f"cannot read {path}: {exc}") from exc
        finally:
            os.close(fd)

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
