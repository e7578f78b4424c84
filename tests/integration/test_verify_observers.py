"""Who observed each event, end to end: a real collector receives an app's event over
HTTP (one bringing its own intake mark of the config watcher) and sees a config file change itself;
`auditlock verify` and `auditlock count` then tell the two apart (issue 12 point 13)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp

from auditlock.sidecar.sources.config_files.watcher import ConfigFileWatcher
from auditlock.sidecar.sources.http.server import HttpIntake
from tests.helpers.config_volumes import ConfigMapVolume
from tests.servers.auditlock_child import run_auditlock
from tests.servers.sidecar import make_config, running_sidecar


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_auditlock(*args)


async def test_verify_and_count_show_who_observed_each_event(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "volume")
    volume.publish({"app.yaml": "mode: safe\n"})
    config = make_config(
        tmp_path,
        sources={
            "config_files": {"enabled": True, "paths": [str(volume.root)], "poll_seconds": 0.1}
        },
    )
    # An app's event shaped like the watcher's, bringing its own "intake" mark (the
    # watcher's actor name itself is refused at intake).
    claim = {
        "category": "configuration",
        "action": "config.file.modified",
        "actor": {"kind": "system", "name": "config-watcher"},
        "target": {"resource": "file", "name": "/etc/app/app.yaml"},
        "intake": {"input": "config_files", "tag": "config_files.configuration"},
    }
    async with running_sidecar(config) as sidecar:
        watcher = sidecar.source(ConfigFileWatcher)
        url = f"http://127.0.0.1:{sidecar.source(HttpIntake).port}/v1/events"
        async with aiohttp.ClientSession() as client:
            answer = await client.post(url, json=claim)
            assert answer.status == 202, await answer.text()
        scans = watcher.scans
        for _ in range(200):  # the baseline scan is certainly spooled
            if watcher.scans >= scans + 2:
                break
            await asyncio.sleep(0.05)
    store = config["destination"]["url"]
    verified = _cli("verify", store, "--public-key", str(tmp_path / "key.pub.pem"), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    (stream,) = json.loads(verified.stdout)["streams"]
    assert stream["observers"] == {"app": 1, "config-watcher": 1}
    text = _cli("verify", store, "--public-key", str(tmp_path / "key.pub.pem")).stdout
    assert "observed by: 1 app, 1 config-watcher" in text
    counted = _cli("count", store, "--json")
    assert json.loads(counted.stdout)["observers"] == {"app": 1, "config-watcher": 1}
