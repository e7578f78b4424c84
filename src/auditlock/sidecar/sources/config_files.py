"""Config-file capture: watch mounted files and record *that* they changed, never contents.

Kubernetes updates ConfigMap and Secret volumes atomically: the files live in a
timestamped directory (`..2026_11_29_15_04_05.123`), `..data` is a symlink to it, and
each visible name is a symlink `name -> ..data/name`. An update writes a new timestamped
directory and swaps `..data` with one rename. This watcher therefore resolves every
visible name through its symlinks and hashes what it points at; entries whose names
start with `..` are the volume's machinery and are skipped.

Every `poll_seconds` the watched paths are scanned (in a worker thread) and compared to
the previous scan. Each difference becomes a `configuration` event:

    action   config.file.created | config.file.modified | config.file.deleted
             | config.file.observed (first scan ever: the baseline)
    target   {"resource": "file", "name": "/etc/app/settings.yaml"}
    details  {"path", "old_sha256", "new_sha256", "size", "volume_revision"}

The last scan is kept in the spool directory (`config_files.json`), so changes made while
the sidecar was down are reported on the next start, and a restart does not repeat
the baseline. A file is re-hashed only when its (inode, size, mtime) changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from auditlock.sidecar.config import ConfigFilesSource
from auditlock.sidecar.intake import Intake, SpoolFull

log = logging.getLogger("auditlock.sidecar.config_files")

INPUT = "config_files"
TAG = "config_files.configuration"
STATE_FILE = "config_files.json"
ACTOR = {"kind": "system", "name": "auditlock-config-watcher"}

Snapshot = dict[str, dict[str, Any]]  # path -> {"sha256", "size", "revision"}


class Scanner:
    """Hashes the files under the watched paths; caches by (inode, size, mtime)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = [Path(p) for p in paths]
        self._cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}

    def scan(self) -> Snapshot:
        out: Snapshot = {}
        for root in self.paths:
            if root.is_dir():
                revision = _revision(root)
                for path in _visible_files(root):
                    self._add(out, path, revision)
            elif root.exists():
                self._add(out, root, _revision(root.parent))
        return out

    def _add(self, out: Snapshot, path: Path, revision: str | None) -> None:
        try:
            stat = os.stat(path)  # follows symlinks: the content behind ..data
            key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            cached = self._cache.get(str(path))
            if cached is not None and cached[0] == key:
                digest = cached[1]
            else:
                digest = _sha256(path)
                self._cache[str(path)] = (key, digest)
        except (FileNotFoundError, NotADirectoryError):
            return  # vanished between listing and reading: the next scan reports it
        except OSError as exc:
            log.warning("cannot read watched file %s: %s", path, exc.strerror)
            return
        entry: dict[str, Any] = {"sha256": digest, "size": stat.st_size}
        if revision:
            entry["revision"] = revision
        out[str(path)] = entry


def _visible_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".."))
        found.extend(Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".."))
    return found


def _revision(directory: Path) -> str | None:
    """The `..data` target of a ConfigMap/Secret volume (its revision), if it is one."""
    try:
        return os.readlink(directory / "..data")
    except OSError:
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def diff(old: Snapshot | None, new: Snapshot) -> list[dict[str, Any]]:
    """Raw configuration records for every difference (or the baseline when old is None)."""
    records: list[dict[str, Any]] = []
    if old is None:
        for path, entry in sorted(new.items()):
            records.append(_record("config.file.observed", path, None, entry))
        return records
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if before is None and after is not None:
            records.append(_record("config.file.created", path, None, after))
        elif after is None and before is not None:
            records.append(_record("config.file.deleted", path, before, None))
        elif before is not None and after is not None and before["sha256"] != after["sha256"]:
            records.append(_record("config.file.modified", path, before, after))
    return records


def _record(
    action: str, path: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> dict[str, Any]:
    details: dict[str, Any] = {"path": path}
    if before is not None:
        details["old_sha256"] = before["sha256"]
    if after is not None:
        details["new_sha256"] = after["sha256"]
        details["size"] = after["size"]
        if after.get("revision"):
            details["volume_revision"] = after["revision"]
    return {
        "category": "configuration",
        "action": action,
        "outcome": "success",
        "actor": ACTOR,
        "target": {"resource": "file", "name": path},
        "details": details,
    }


class ConfigFileWatcher:
    def __init__(self, config: ConfigFilesSource, intake: Intake, state_dir: Path) -> None:
        self.config = config
        self.intake = intake
        self.scanner = Scanner(config.paths)
        self.state_path = Path(state_dir) / STATE_FILE
        self._task: asyncio.Task[None] | None = None
        self._previous: Snapshot | None = None
        self.scans = 0

    async def start(self) -> None:
        self._previous = await asyncio.to_thread(self._load_state)
        await self.poll_once()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                await self.poll_once()
            except SpoolFull:
                log.warning("spool full: configuration changes will be recorded on a later scan")
            except Exception:
                log.exception("config file scan failed")

    async def poll_once(self) -> int:
        """Scan, spool the differences, then remember the scan. Returns events spooled."""
        snapshot = await asyncio.to_thread(self.scanner.scan)
        self.scans += 1
        records = diff(self._previous, snapshot)
        if records:
            now = time.time_ns()
            prepared = self.intake.prepare(INPUT, [(TAG, now, r) for r in records])
            await self.intake.commit(INPUT, prepared, [])
        # Only after the events are durable: a crash before this re-reports the change.
        if records or self._previous is None:
            await asyncio.to_thread(self._save_state, snapshot)
        self._previous = snapshot
        return len(records)

    def _load_state(self) -> Snapshot | None:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s (%s): taking a new baseline", self.state_path, exc)
            return None
        snapshot: Snapshot = data.get("files", {})
        return snapshot

    def _save_state(self, snapshot: Snapshot) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump({"files": snapshot}, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_path)
