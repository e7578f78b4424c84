"""Intake taps (docs/architecture.md, "Intake taps"): every accepted event, once, after it
is durable; a failing tap is counted and changes nothing for the sender."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import orjson

from auditlock.sidecar.intake import Accepted
from auditlock.sidecar.sources.forward.server import ForwardServer
from auditlock.sidecar.sources.http.server import HttpIntake
from tests.servers.sidecar import ledger_events, make_config, open_store, running_sidecar


def record(n: int) -> dict[str, Any]:
    return {"action": "read", "actor": "alice", "target": f"orders/{n}", "n": n}


async def send_forward(port: int, chunk: str, records: list[dict[str, Any]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    entries = [[int(time.time()), r] for r in records]
    writer.write(msgpack.packb(["app.access", entries, {"chunk": chunk}]))
    await writer.drain()
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = await asyncio.wait_for(reader.read(4096), 10)
        assert data, "connection closed before the ack"
        unpacker.feed(data)
        for message in unpacker:
            assert message == {"ack": chunk}
            writer.close()
            return


async def test_taps_see_each_accepted_event_once_after_it_is_durable(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    seen: list[Accepted] = []
    durable_when_told: list[bool] = []

    async with running_sidecar(config) as sidecar:
        spool = sidecar.spool

        def tap(accepted: Accepted) -> None:
            durable_when_told.append(spool.committed >= accepted.record)
            seen.append(accepted)

        def broken(accepted: Accepted) -> None:
            raise RuntimeError("a tap with a bug")

        sidecar.intake.add_tap(broken, "broken")
        sidecar.intake.add_tap(tap, "recorder")
        port = sidecar.source(ForwardServer).port
        await send_forward(port, "c1", [record(n) for n in range(5)])
        await send_forward(port, "c1", [record(n) for n in range(5)])  # retransmission
        bad = {"action": "read", "actor": "alice"}  # no target: rejected, never tapped
        await send_forward(port, "c2", [record(5), bad, record(6)])
        url = f"http://127.0.0.1:{sidecar.source(HttpIntake).port}/v1/events"
        async with aiohttp.ClientSession() as session:
            body = orjson.dumps([{**record(n), "category": "data"} for n in (7, 8)])
            async with session.post(url, data=body) as answer:
                assert answer.status == 202
        errors = sidecar.metrics.tap_errors.labels("broken")._value.get()
        received = sidecar.metrics.events_in.labels("forward")._value.get()

    assert durable_when_told and all(durable_when_told)
    assert {a.stream_id for a in seen} == {"shop_api-1"}
    assert [a.input_name for a in seen] == ["forward", "forward", "http"]
    assert [a.record for a in seen] == sorted(a.record for a in seen)
    tapped = [orjson.loads(e) for a in seen for e in a.events]
    assert [e["details"]["n"] for e in tapped] == list(range(9))
    assert errors == len(seen)  # counted for every call, and the events were still taken
    assert received == 7
    stored = ledger_events(open_store(config["destination"]["url"]))
    assert tapped == [line["event"] for line in stored]
