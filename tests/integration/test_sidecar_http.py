"""HTTP intake: object, array and NDJSON bodies; 202 only once durable; 400 names the field."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from auditlock.sidecar.sources.http.server import HttpIntake
from tests.helpers.http_intake import event, post, wait_until_shipped
from tests.servers.sidecar import (
    ledger_events,
    make_config,
    open_store,
    running_sidecar,
    sidecar_process,
    stored_ledger,
)


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


def test_a_resent_batch_with_its_idempotency_key_is_stored_once_across_restarts(
    tmp_path: Path,
) -> None:
    # The retry a client makes after a lost 202: the same batch with the same key, to the
    # same sidecar, to a restarted one (SIGKILL: from the spool's records) and after the
    # records were shipped and released (from chunk-ids.log).
    config = make_config(tmp_path, ports=True)
    with sidecar_process(tmp_path, config) as sidecar:
        sidecar.start()
        batch = [event(n) for n in range(3)]
        assert post(sidecar.http_port, batch, "batch-1") == (202, {"accepted": 3, "filtered": 0})
        duplicate = (202, {"accepted": 0, "filtered": 0, "duplicate": True})
        with ThreadPoolExecutor(4) as pool:  # concurrent resends: one stored, all 202
            answers = list(pool.map(lambda _: post(sidecar.http_port, batch, "batch-1"), range(4)))
        assert answers == [duplicate] * 4
        racing = [event(n) for n in (10, 11)]  # first sends racing each other: one stores
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(sidecar.http_port, racing, "race"), range(4)))
        assert sorted(map(str, answers)) == sorted(
            map(str, [(202, {"accepted": 2, "filtered": 0})] + [duplicate] * 3)
        )
        sidecar.kill()
        sidecar.start()
        assert post(sidecar.http_port, batch, "batch-1") == duplicate
        assert post(sidecar.http_port, [event(3)], "batch-2")[0] == 202
        assert post(sidecar.http_port, [event(4)], None)[0] == 202
        assert post(sidecar.http_port, [event(4)], None)[0] == 202  # no key: stored again
        wait_until_shipped(sidecar, 8)
        assert sidecar.terminate() == 0
        sidecar.start()  # every record released: the keys now come from chunk-ids.log
        assert not list((tmp_path / "spool").glob("seg-*.spool"))[1:]
        assert post(sidecar.http_port, batch, "batch-1") == duplicate
        assert post(sidecar.http_port, [event(3)], "batch-2") == duplicate
        assert "auditlock_sidecar_http_duplicate_requests_total 2.0" in sidecar.metrics()
        status, answer = post(sidecar.http_port, batch, "has space")
        assert status == 400 and "Idempotency-Key" in answer["error"]
        assert sidecar.terminate() == 0
    names = [e["target"]["name"] for e in stored_ledger(config).events]
    assert names == ["inv-0", "inv-1", "inv-2", "inv-10", "inv-11", "inv-3", "inv-4", "inv-4"]
