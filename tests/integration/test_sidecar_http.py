"""HTTP intake: object, array and NDJSON bodies; 202 only once durable; 400 names the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from auditlock.sidecar.sources.http_intake import HttpIntake
from tests.servers.sidecar import ledger_events, make_config, open_store, running_sidecar


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "category": "data",
        "action": "delete",
        "outcome": "success",
        "actor": {"kind": "user", "name": "bob", "ip": "10.0.0.9"},
        "target": {"resource": "invoices", "name": f"inv-{n}"},
        "request_id": f"req-{n}",
        **extra,
    }


async def test_object_array_and_ndjson_are_accepted_once_durable(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        url = f"http://127.0.0.1:{sidecar.source(HttpIntake).port}/v1/events"
        async with aiohttp.ClientSession() as client:
            answer = await client.post(url, json=event(0))
            assert answer.status == 202, await answer.text()
            assert await answer.json() == {"accepted": 1, "filtered": 0}
            committed = sidecar.spool.committed
            assert committed >= 1
            answer = await client.post(url, json=[event(1), event(2)])
            assert (await answer.json())["accepted"] == 2
            ndjson = "\n".join(json.dumps(event(n)) for n in range(3, 6)) + "\n"
            answer = await client.post(
                url, data=ndjson, headers={"Content-Type": "application/x-ndjson"}
            )
            assert answer.status == 202
            assert (await answer.json())["accepted"] == 3
    events = ledger_events(open_store(config["destination"]["url"]))
    assert [e["event"]["target"]["name"] for e in events] == [f"inv-{n}" for n in range(6)]
    assert events[0]["event"]["correlation"] == {"request_id": "req-0"}


async def test_invalid_events_get_400_with_field_and_reason_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    async with running_sidecar(config) as sidecar:
        url = f"http://127.0.0.1:{sidecar.source(HttpIntake).port}/v1/events"
        async with aiohttp.ClientSession() as client:
            bad_ip = event(1)
            bad_ip["actor"] = {"kind": "user", "name": "x", "ip": "not-an-ip"}
            answer = await client.post(url, json=[event(0), bad_ip, {"category": "data"}])
            assert answer.status == 400
            body = await answer.json()
            assert [(e["index"], e["field"]) for e in body["errors"]] == [
                (1, "actor.ip"),
                (2, "action"),
            ]
            assert "nothing stored" in body["error"]
            answer = await client.post(url, data=b"{broken")
            assert answer.status == 400
            assert "not JSON" in (await answer.json())["error"]
            answer = await client.post(url, data=b'{"category": "data", "action": "\xff\xfe"}')
            assert answer.status == 400
        assert sidecar.spool.committed == 0
        assert sidecar.metrics.events_rejected.labels("http", "bad_json")._value.get() == 2


async def test_body_over_the_limit_gets_413(tmp_path: Path) -> None:
    config = make_config(tmp_path, sources={"http": {"max_body_bytes": 4096}})
    async with running_sidecar(config) as sidecar:
        url = f"http://127.0.0.1:{sidecar.source(HttpIntake).port}/v1/events"
        async with aiohttp.ClientSession() as client:
            answer = await client.post(url, json=event(0, blob="x" * 10_000))
            assert answer.status == 413
