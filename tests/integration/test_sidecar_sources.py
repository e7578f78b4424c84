"""Config-file capture and the access proxy, end to end; health, readiness and metrics."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
from aiohttp import web

from auditlock.sidecar.sources.access_proxy.proxy import AccessProxy
from auditlock.sidecar.sources.config_files.watcher import ConfigFileWatcher
from tests.helpers.config_volumes import ConfigMapVolume
from tests.servers.sidecar import (
    free_port,
    ledger_events,
    make_config,
    open_store,
    running_sidecar,
    verify_ledger,
)


async def test_configmap_update_is_recorded_with_hashes_only(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "volume")
    volume.publish({"app.yaml": "mode: safe\n", "token": "top-secret-value"})
    config = make_config(
        tmp_path,
        sources={
            "config_files": {"enabled": True, "paths": [str(volume.root)], "poll_seconds": 0.1}
        },
    )
    async with running_sidecar(config) as sidecar:
        watcher = sidecar.source(ConfigFileWatcher)
        for _ in range(200):  # the baseline scan runs in the background after start
            if watcher.scans >= 1:
                break
            await asyncio.sleep(0.05)
        volume.publish({"app.yaml": "mode: unsafe\n", "token": "top-secret-value"})
        scans = watcher.scans
        for _ in range(200):  # two more scans: the change is certainly seen and spooled
            if watcher.scans >= scans + 2:
                break
            await asyncio.sleep(0.05)
    # A restart does not repeat the baseline; a change made while down is reported.
    volume.publish({"app.yaml": "mode: unsafe\n", "token": "rotated"})
    async with running_sidecar(config):
        pass
    store = open_store(config["destination"]["url"])
    events = [e["event"] for e in ledger_events(store)]
    actions = [(e["action"], e["target"]["name"].rsplit("/", 1)[-1]) for e in events]
    assert actions == [
        ("config.file.observed", "app.yaml"),
        ("config.file.observed", "token"),
        ("config.file.modified", "app.yaml"),
        ("config.file.modified", "token"),
    ]
    modified = events[2]["details"]
    assert modified["old_sha256"] == hashlib.sha256(b"mode: safe\n").hexdigest()
    assert modified["new_sha256"] == hashlib.sha256(b"mode: unsafe\n").hexdigest()
    assert all(e["category"] == "configuration" for e in events)
    raw = b"".join(store.get(n) for n in store.list("streams/"))
    assert b"top-secret-value" not in raw and b"rotated" not in raw
    verify_ledger(store, tmp_path / "key.pub.pem")


async def test_access_proxy_forwards_and_records_unverified_identity(tmp_path: Path) -> None:
    async def hello(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(status=201 if body else 200, text=f"hi {request.path}")

    async def forbidden(request: web.Request) -> web.Response:
        return web.Response(status=403, text="no")

    app = web.Application()
    app.router.add_route("*", "/hello", hello)
    app.router.add_get("/admin", forbidden)
    runner = web.AppRunner(app)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    config = make_config(
        tmp_path,
        sources={
            "access_proxy": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": 0,
                "upstream": f"http://127.0.0.1:{upstream_port}",
            }
        },
    )
    try:
        async with running_sidecar(config) as sidecar:
            proxy = f"http://127.0.0.1:{sidecar.source(AccessProxy).port}"
            async with aiohttp.ClientSession() as client:
                answer = await client.get(
                    f"{proxy}/hello?x=1",
                    headers={"X-Forwarded-User": "alice", "X-Request-Id": "rq-7",
                             "Authorization": "Bearer never-recorded"},
                )  # fmt: skip
                assert (answer.status, await answer.text()) == (200, "hi /hello")
                answer = await client.post(f"{proxy}/hello", data=b"payload")
                assert answer.status == 201
                answer = await client.get(f"{proxy}/admin")
                assert answer.status == 403
            await asyncio.sleep(0.2)
    finally:
        await runner.cleanup()
    store = open_store(config["destination"]["url"])
    events = [e["event"] for e in ledger_events(store)]
    assert [(e["action"], e["target"]["name"], e["outcome"]) for e in events] == [
        ("GET", "/hello", "success"),
        ("POST", "/hello", "success"),
        ("GET", "/admin", "failure"),
    ]
    first = events[0]
    assert first["actor"] == {"kind": "user", "name": "alice", "ip": "127.0.0.1"}
    assert first["details"]["identity_verified"] is False
    assert first["details"]["status"] == 200
    assert first["details"]["duration_ns"] > 0
    assert first["correlation"] == {"request_id": "rq-7"}
    assert events[1]["actor"]["kind"] == "anonymous"
    raw = b"".join(store.get(n) for n in store.list("streams/"))
    assert b"never-recorded" not in raw and b"payload" not in raw


async def test_health_readiness_and_metrics(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        base = f"http://127.0.0.1:{sidecar.health.port}"
        async with aiohttp.ClientSession() as client:
            assert (await client.get(f"{base}/healthz")).status == 200
            ready = await client.get(f"{base}/readyz")
            assert ready.status == 200 and "ready" in await ready.text()
            text = await (await client.get(f"{base}/metrics")).text()
        for name in (
            "auditlock_sidecar_events_received_total",
            "auditlock_sidecar_events_shipped_total",
            "auditlock_sidecar_events_rejected_total",
            "auditlock_sidecar_bytes_received_total",
            "auditlock_sidecar_spool_fill_ratio",
            "auditlock_sidecar_upload_lag_seconds",
            "auditlock_sidecar_last_checkpoint_age_seconds",
        ):
            assert name in text, name
        sidecar.state = "stopping"
        async with aiohttp.ClientSession() as client:
            assert (await client.get(f"{base}/readyz")).status == 503
        sidecar.state = "running"
