"""Config-file capture: watch mounted files and record *that* they changed, never contents.

Kubernetes updates ConfigMap and Secret volumes atomically: the files live in a
timestamped directory (`..2026_11_29_15_04_05.123`), `..data` is a symlink to it, and
each visible name is a symlink `name -> ..data/name`. An update writes a new timestamped
directory and swaps `..data` with one rename. The scan (scan.py) therefore
resolves every visible name through its symlinks, within the volume, and hashes what it
points at; in such a volume, entries whose names start with `..` are its machinery and
are not listed themselves.

Every `poll_seconds` the watched paths are scanned (in a worker thread; the first scan
too, so a slow or hostile folder delays neither readiness nor shutdown) and compared to
the previous scan. Each difference becomes a `configuration` event:

    action   config.file.created | config.file.modified | config.file.deleted
             | config.file.observed (first scan ever: the baseline)
             | config.file.skipped (not hashed: a FIFO, a link leaving the volume, too
               large, past the file cap, ...; outcome `failure`, `details.reason`)
    target   {"resource": "file", "name": "/etc/app/settings.yaml"}
    details  {"path", "old_sha256", "new_sha256", "size", "volume_revision", "reason"}

A skipped entry is reported when it first appears or its reason changes (event, log
line, `config_files_skipped_total{reason}`), not at every scan.

The last scan is kept in the spool directory (`config_files.json`), so changes made while
the sidecar was down are reported on the next start, and a restart does not repeat
the baseline. A file is re-hashed only when its (inode, size, mtime) changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from typing import Any

from auditlock.sidecar.intake import SpoolFull
from auditlock.sidecar.sources import SourceContext
from auditlock.sidecar.sources.config_files.config import ConfigFilesSource
from auditlock.sidecar.sources.config_files.scan import Entry, Scanner, Snapshot, Stopped
from auditlock.sidecar.sources.own_events import spool_events

__all__ = ["ConfigFileWatcher", "Scanner", "Snapshot", "diff"]

log = logging.getLogger("auditlock.sidecar.config_files")

INPUT = "config_files"
TAG = "config_files.configuration"
STATE_FILE = "config_files.json"
ACTOR = {"kind": "system", "name": "auditlock-config-watcher"}
PREPARE_EVENTS = 1000  # events through the pipeline at once: bounds its memory per step
STOP_WAIT_SECONDS = 2.0  # a scan under way may finish (and be recorded) within this
LOGGED_SKIPS = 20  # per scan; the rest are counted in one line


def diff(old: Snapshot | None, new: Snapshot) -> list[dict[str, Any]]:
    """Raw configuration records for every difference (or the baseline when old is None)."""
    records: list[dict[str, Any]] = []
    if old is None:
        for path, entry in sorted(new.items()):
            action = "config.file.skipped" if "skipped" in entry else "config.file.observed"
            records.append(_record(action, path, None, entry))
        return records
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if after is None:
            if before is not None:
                records.append(_record("config.file.deleted", path, before, None))
        elif "skipped" in after:
            if before is None or before.get("skipped") != after["skipped"]:
                records.append(_record("config.file.skipped", path, before, after))
        elif before is None:
            records.append(_record("config.file.created", path, None, after))
        elif before.get("sha256") != after["sha256"]:
            records.append(_record("config.file.modified", path, before, after))
    return records


def _record(action: str, path: str, before: Entry | None, after: Entry | None) -> dict[str, Any]:
    details: dict[str, Any] = {"path": path}
    if before is not None:
        if "sha256" in before:
            details["old_sha256"] = before["sha256"]
        elif after is not None and "skipped" not in after:
            details["old_reason"] = before["skipped"]  # hashed again after being skipped
    outcome = "success"
    if after is not None:
        if "skipped" in after:
            outcome = "failure"
            details.update((k, v) for k, v in after.items() if k != "skipped")
            details["reason"] = after["skipped"]
        else:
            details["new_sha256"] = after["sha256"]
            details["size"] = after["size"]
            if after.get("revision"):
                details["volume_revision"] = after["revision"]
    return {
        "category": "configuration",
        "action": action,
        "outcome": outcome,
        "actor": ACTOR,
        "target": {"resource": "file", "name": path},
        "details": details,
    }


class ConfigFileWatcher:
    def __init__(self, config: ConfigFilesSource, context: SourceContext) -> None:
        self.config = config
        self.intake = context.intake
        # The collector's own files (signing key, spool) are never read.
        self.scanner = Scanner(
            config.paths,
            max_files=config.max_files,
            max_file_bytes=config.max_file_bytes,
            private=[*context.private, context.state_dir],
        )
        self.state_path = context.state_dir / STATE_FILE
        self._task: asyncio.Task[None] | None = None
        self._previous: Snapshot | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self._stop_scan = threading.Event()
        self.scans = 0

    async def start(self) -> None:
        """Returns at once: the first scan runs in the background like every other."""
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            # A scan under way is let finish briefly so a change it saw is recorded.
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_SECONDS)
        except TimeoutError:
            log.warning("config file scan still running at shutdown: abandoned")
            self._stop_scan.set()  # the worker thread ends at its next file or block
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        self._previous = await asyncio.to_thread(self._load_state)
        while True:  # at least one scan, even when asked to stop at once
            try:
                await self.poll_once()
            except SpoolFull:
                log.warning("spool full: configuration changes will be recorded on a later scan")
            except Stopped:
                return
            except Exception:
                log.exception("config file scan failed")
            if self._closing:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    async def poll_once(self) -> int:
        """Scan, spool the differences, then remember the scan. Returns events spooled."""
        previous = self._previous
        snapshot, records = await asyncio.to_thread(self._scan_and_diff, previous)
        self.scans += 1
        self._report_skips(records)
        now = time.time_ns()
        for start in range(0, len(records), PREPARE_EVENTS):
            batch = records[start : start + PREPARE_EVENTS]
            events = self.intake.prepare(INPUT, [(TAG, now, r) for r in batch]).events
            while events:
                done, full = await spool_events(self.intake, INPUT, events)
                del events[:done]
                if full is not None:
                    if self._closing:
                        raise full  # the changes are reported again at the next start
                    # No new scan until there is room.
                    await self.intake.wait_for_room(full.needed, 1)
        # Only after the events are durable: a crash before this re-reports the change.
        if records or previous is None:
            await asyncio.to_thread(self._save_state, snapshot)
        self._previous = snapshot
        return len(records)

    def _scan_and_diff(self, previous: Snapshot | None) -> tuple[Snapshot, list[dict[str, Any]]]:
        snapshot = self.scanner.scan(self._stop_scan)
        return snapshot, diff(previous, snapshot)

    def _report_skips(self, records: list[dict[str, Any]]) -> None:
        skipped = [r["details"] for r in records if r["action"] == "config.file.skipped"]
        counter = self.intake.metrics.config_files_skipped
        for details in skipped:
            counter.labels(details["reason"]).inc()
        for details in skipped[:LOGGED_SKIPS]:
            log.warning("config file %s not hashed: %s", details["path"], details["reason"])
        if len(skipped) > LOGGED_SKIPS:
            log.warning("%d more config file(s) not hashed", len(skipped) - LOGGED_SKIPS)

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
