"""Forward chunk ids and HTTP Idempotency-Keys never collide (real sockets, one collector)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from auditlock.sidecar.sources.http.server import HttpIntake
from tests.helpers.forward import forward_port, read_ack
from tests.servers.sidecar import make_config, running_sidecar, stored_ledger


def event(name: str) -> dict[str, Any]:
    return {"category": "data", "action": "write", "actor": "a", "target": name}


async def forward_chunk(port: int, chunk: str, name: str) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    entries = msgpack.packb([1_764_428_645, event(name)])
    writer.write(msgpack.packb(["app.data", entries, {"chunk": chunk}]))
    await writer.drain()
    answer = await read_ack(reader)
    writer.close()
    return answer


async def test_a_forward_chunk_id_and_an_http_key_of_the_same_text_are_both_stored(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        port = forward_port(sidecar)
        url = f"http://127.0.0.1:{sidecar.source(HttpIntake).port}/v1/events"
        async with aiohttp.ClientSession() as client:
            # A Forward chunk id "http:K" first, then an HTTP request with key K ...
            assert await forward_chunk(port, "http:K", "forward-1") == {"ack": "http:K"}
            reply = await client.post(url, json=event("http-1"), headers={"Idempotency-Key": "K"})
            assert (reply.status, await reply.json()) == (202, {"accepted": 1, "filtered": 0})
            # ... and the other way round: key L first, then chunk "http:L".
            reply = await client.post(url, json=event("http-2"), headers={"Idempotency-Key": "L"})
            assert reply.status == 202
            assert await forward_chunk(port, "http:L", "forward-2") == {"ack": "http:L"}
            # Each is still recognised within its own kind.
            reply = await client.post(url, json=event("http-1"), headers={"Idempotency-Key": "K"})
            assert (await reply.json())["duplicate"] is True
            assert await forward_chunk(port, "http:K", "forward-1") == {"ack": "http:K"}
        assert sidecar.metrics.duplicate_chunks._value.get() == 1
    names = sorted(e["target"]["resource"] for e in stored_ledger(config).events)
    assert names == ["forward-1", "forward-2", "http-1", "http-2"]
