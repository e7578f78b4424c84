"""Real Forward clients from two ecosystems: npm fluent-logger (with acks) and Python's."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from auditlock.sidecar.sources.forward.server import ForwardServer
from tests.servers.sidecar import (
    ROOT,
    ledger_events,
    make_config,
    open_store,
    running_sidecar,
    stored_ledger,
)

NODE_CLIENT = ROOT / "tests" / "clients" / "node-forward"


def node_ready() -> None:
    if (
        shutil.which("node") is None
        or not (NODE_CLIENT / "node_modules" / "fluent-logger").is_dir()
    ):
        pytest.fail(
            "npm fluent-logger is not installed: run scripts/bootstrap.d/30-forward-clients.sh "
            "(make test does)"
        )


async def run_node(port: int, count: int, mode: str, shared_key: str | None = None) -> dict:
    args = ["node", "send.js", str(port), str(count), mode]
    if shared_key:
        args.append(shared_key)
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=NODE_CLIENT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 150)
    assert out, f"node client printed nothing; stderr: {err.decode()[-2000:]}"
    result: dict = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", ["PackedForward", "CompressedPackedForward", "Message"])
async def test_npm_fluent_logger_with_acks(tmp_path: Path, mode: str) -> None:
    node_ready()
    count = 2000 if mode != "Message" else 300
    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        result = await run_node(sidecar.source(ForwardServer).port, count, mode)
        assert result == {"acked": count, "errors": []}
    events = stored_ledger(config).events
    assert sorted(e["details"]["n"] for e in events) == list(range(count))
    assert all(e["details"]["intake"]["tag"] == "node.access" for e in events)


async def test_npm_fluent_logger_with_shared_key(tmp_path: Path) -> None:
    node_ready()
    config = make_config(tmp_path, sources={"forward": {"shared_key": "n0de-s3cret"}})
    async with running_sidecar(config) as sidecar:
        port = sidecar.source(ForwardServer).port
        result = await run_node(port, 50, "PackedForward", "n0de-s3cret")
        assert result == {"acked": 50, "errors": []}
    events = ledger_events(open_store(config["destination"]["url"]))
    assert len(events) == 50
