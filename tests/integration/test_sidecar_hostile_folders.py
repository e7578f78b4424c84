"""A real collector process watching folders built to hurt it (docs/threat-model.md,
"Config-file capture and the access proxy").

Each test asserts how fast the collector becomes ready and exits on SIGTERM, its peak
memory, that real changes are still recorded, and what the verified trail holds.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from tests.helpers.config_volumes import ConfigMapVolume
from tests.servers.sidecar import (
    ledger_events,
    make_config,
    open_store,
    sidecar_process,
    terminate_promptly,
    verify_ledger,
)

MiB = 1024 * 1024
MAX_FILES = 1_000
# A collector with nothing to watch takes up to about 6 s to become ready on a loaded
# 2-core CI machine; a scan that held readiness back would never (FIFO, self-links) or
# only after minutes (the hashing below) let it become ready.
READY_WITHIN = 15.0
EXIT_WITHIN = 10.0  # SIGTERM: 2 s for a scan under way, then the usual shutdown


def watcher_events(store_url: str) -> list[dict[str, Any]]:
    return [
        e["event"]
        for e in ledger_events(open_store(store_url))
        if e["event"]["category"] == "configuration"
    ]


def wait_for_events(store_url: str, wanted: set[tuple[str, str]], timeout: float = 30) -> None:
    """Until every (action, path) in `wanted` is stored at the destination."""
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        seen = {(e["action"], e["details"]["path"]) for e in watcher_events(store_url)}
        if wanted <= seen:
            return
        time.sleep(0.2)
    raise AssertionError(f"never stored: {sorted(wanted - seen)}")


def skipped_metric(metrics: str, reason: str) -> float:
    found = re.search(
        rf'^auditlock_sidecar_config_files_skipped_total\{{reason="{reason}"\}} (\S+)$',
        metrics,
        re.M,
    )
    return float(found.group(1)) if found else 0.0


def test_hostile_folder_is_reported_and_real_changes_still_arrive(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    os.mkfifo(hostile / "fifo")  # opening it for reading blocks until a writer comes
    (hostile / "zero").symlink_to("/dev/zero")  # endless
    (hostile / "a").symlink_to(".")  # two self-links: an endless tree
    (hostile / "b").symlink_to(".")
    (hostile / "shadow").symlink_to("/etc/shadow")
    (hostile / "big").write_bytes(b"x" * (2 * MiB))
    (hostile / "app.conf").write_text("mode: safe\n")
    # Ten times the scan's file cap (lowered from its default 10,000 to MAX_FILES: what
    # is under test is the cap and its report, not the default's size).
    many = tmp_path / "many"
    many.mkdir()
    for i in range(10 * MAX_FILES):
        (many / f"f{i:06d}").write_bytes(b"%d" % i)
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.publish({"app.yaml": "level: 1\n"})
    # The collector's own key and spool inside a watched folder, and a link to the key.
    private = tmp_path / "private"
    private.mkdir()
    config = make_config(
        tmp_path / "collector",
        ports=True,
        sources={
            "config_files": {
                "enabled": True,
                "paths": [str(hostile), str(many), str(volume.root), str(private)],
                "poll_seconds": 0.2,
                "max_file_bytes": MiB,
                "max_files": MAX_FILES,
            },
        },
        spool={"dir": str(private / "spool")},
    )
    key = tmp_path / "collector" / "key.pem"
    (private / "key.pem").write_bytes(key.read_bytes())
    config["stream"]["signing_key_file"] = str(private / "key.pem")
    (hostile / "key").symlink_to(private / "key.pem")
    store_url = config["destination"]["url"]
    root = str(hostile)
    with sidecar_process(tmp_path / "collector", config) as sidecar:
        ready_after = sidecar.start(timeout=60)
        assert ready_after < READY_WITHIN, f"ready after {ready_after:.1f}s"
        wait_for_events(store_url, {("config.file.observed", f"{root}/app.conf")})
        # Real changes made after the hostile entries were met are still recorded.
        (hostile / "app.conf").write_text("mode: unsafe\n")
        volume.publish({"app.yaml": "level: 2\n"})
        wait_for_events(
            store_url,
            {
                ("config.file.modified", f"{root}/app.conf"),
                ("config.file.modified", f"{volume.root}/app.yaml"),
            },
        )
        time.sleep(1)  # several more scans of the same hostile folder
        metrics = sidecar.metrics()
        cpu = sidecar.cpu_seconds()
        terminate_promptly(sidecar, within=EXIT_WITHIN)
    assert cpu < 30, f"{cpu:.1f} CPU seconds"

    verify_ledger(open_store(store_url), tmp_path / "collector" / "key.pub.pem")
    events = watcher_events(store_url)
    skipped = {
        e["details"]["path"]: e["details"]["reason"]
        for e in events
        if e["action"] == "config.file.skipped"
    }
    assert skipped == {
        f"{root}/fifo": "not_regular",
        f"{root}/zero": "outside_volume",
        f"{root}/a": "directory_revisited",
        f"{root}/b": "directory_revisited",
        f"{root}/shadow": "outside_volume",
        f"{root}/key": "outside_volume",
        f"{root}/big": "too_large",
        str(many): "file_limit",
        f"{private}/key.pem": "collector_private",
        f"{private}/spool": "collector_private",
    }
    # Each is reported once (when first seen), not at every scan.
    assert sum(e["action"] == "config.file.skipped" for e in events) == len(skipped)
    assert all(e["outcome"] == "failure" for e in events if e["action"] == "config.file.skipped")
    for reason in set(skipped.values()):
        expected = sum(r == reason for r in skipped.values())
        assert skipped_metric(metrics, reason) == expected, reason
    hashed = {e["details"].get("new_sha256") for e in events}
    assert hashlib.sha256(key.read_bytes()).hexdigest() not in hashed
    assert hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest() not in hashed
    assert hashlib.sha256(b"").hexdigest() not in hashed  # nothing read from a FIFO
    tracked = [e for e in events if e["details"]["path"].startswith(f"{many}/")]
    assert 0 < len(tracked) <= MAX_FILES  # the file cap: the rest is the file_limit report


def test_slow_scan_delays_neither_readiness_nor_sigterm(tmp_path: Path) -> None:
    """4,000 sparse 8 MiB files: about 31 GiB to hash, which takes far longer than the
    collector may take to become ready or to exit."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "app.conf").write_text("a")
    config = make_config(
        tmp_path / "collector",
        ports=True,
        sources={"config_files": {"enabled": True, "paths": [str(slow)], "poll_seconds": 0.2}},
    )
    store_url = config["destination"]["url"]
    for i in range(4000):
        with open(slow / f"blob{i:04d}", "wb") as handle:
            handle.truncate(8 * MiB)
    with sidecar_process(tmp_path / "collector", config) as sidecar:
        ready_after = sidecar.start(timeout=60)
        assert ready_after < READY_WITHIN, f"ready after {ready_after:.1f}s"
        time.sleep(1.5)  # the scan is under way
        assert sidecar.ready()
        terminate_promptly(sidecar, within=EXIT_WITHIN)
    verify_ledger(open_store(store_url), tmp_path / "collector" / "key.pub.pem")
