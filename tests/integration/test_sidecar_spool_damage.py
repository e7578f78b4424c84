"""A spool damaged while the collector is stopped: the collector starts, names the file
and offset, counts the loss in a metric and records a signed `alert` event in the trail
saying how many acknowledged records were lost; everything else ships exactly once."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.helpers.spool import record_offsets
from tests.servers.sidecar import make_config, sidecar_process, stored_ledger, wait_for

BATCH = 5


def post_batch(port: int, first: int) -> int:
    body = json.dumps(
        [
            {"category": "data", "action": "write", "actor": "a", "target": "t", "n": n}
            for n in range(first, first + BATCH)
        ]
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def spool_with_unshipped_records(workdir: Path, batches: int, ship: int = 0) -> dict[str, Any]:
    """Acknowledged batches left in the spool by a SIGKILL: the first `ship` batches were
    shipped (and released) before, the rest not."""
    config = make_config(workdir, ports=True, spool={"segment_bytes": 16 * 1024})
    with sidecar_process(workdir, config) as sidecar:
        sidecar.start()
        for i in range(ship):
            assert post_batch(sidecar.http_port, i * BATCH) == 202
        if ship:
            wait_for(
                lambda: sidecar.metric("auditlock_sidecar_events_shipped_total") >= ship * BATCH,
                30,
                "the first batches shipped",
            )
        sidecar.kill()
    config["delivery"] = {"max_delay_seconds": 600, "batch_max_events": 100_000}
    with sidecar_process(workdir, config) as sidecar:  # nothing ships: max delay 10 min
        sidecar.start()
        for i in range(ship, batches):
            assert post_batch(sidecar.http_port, i * BATCH) == 202
        sidecar.kill()
    config["delivery"] = {"max_delay_seconds": 0.1}
    return config


def restart_and_stop(workdir: Path, config: dict[str, Any]) -> tuple[str, str]:
    with sidecar_process(workdir, config) as sidecar:
        sidecar.start()
        wait_for(lambda: "spool_damage_total 1.0" in sidecar.metrics(), 10, "the damage metric")
        metrics = sidecar.metrics()
        assert sidecar.terminate() == 0, sidecar.tail()
        return metrics, sidecar.log_path.read_text()


def alerts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["event"] for e in events if e["event"]["action"] == "spool.damaged"]


def test_a_flipped_byte_in_a_middle_segment_is_reported_in_the_trail(tmp_path: Path) -> None:
    config = spool_with_unshipped_records(tmp_path, batches=60)
    segments = sorted((tmp_path / "spool").glob("seg-*.spool"))
    assert len(segments) >= 3
    victim = segments[1]
    offsets = record_offsets(victim)
    lost_records = len(offsets) - 1  # from the second record of the file to its end
    data = bytearray(victim.read_bytes())
    data[offsets[1] + 20] ^= 0x40
    victim.write_bytes(bytes(data))
    first_lost = int(victim.name[4:-6]) + 1
    metrics, log = restart_and_stop(tmp_path, config)
    assert f"{victim.name} at byte {offsets[1]}: checksum mismatch" in log
    assert f"auditlock_sidecar_spool_records_lost_total {float(lost_records)}" in metrics
    assert "Traceback" not in log
    events = stored_ledger(config).lines
    (alert,) = alerts(events)
    assert alert["category"] == "alert" and alert["details"]["records_lost"] == lost_records
    assert victim.name in alert["details"]["damage"][0]
    lost = set(range((first_lost - 1) * BATCH, (first_lost - 1 + lost_records) * BATCH))
    seen = Counter(e["event"]["details"]["n"] for e in events if "n" in e["event"]["details"])
    assert set(seen) == set(range(60 * BATCH)) - lost and max(seen.values()) == 1
    assert (tmp_path / "spool" / "damaged").is_dir()


def test_a_garbage_state_file_is_reported_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    config = spool_with_unshipped_records(tmp_path, batches=30, ship=10)
    (tmp_path / "spool" / "state.json").write_bytes(b"\x00\x01 not json {")
    metrics, log = restart_and_stop(tmp_path, config)
    assert "state.json: not a valid spool state" in log and "Traceback" not in log
    assert "auditlock_sidecar_spool_records_lost_total 0.0" in metrics
    events = stored_ledger(config).lines
    (alert,) = alerts(events)
    assert alert["details"]["may_be_stored_twice"] is True
    seen = Counter(e["event"]["details"]["n"] for e in events if "n" in e["event"]["details"])
    assert set(seen) == set(range(30 * BATCH))  # every acknowledged event, some twice


def test_a_state_file_claiming_more_than_the_spool_held_is_not_trusted(tmp_path: Path) -> None:
    config = spool_with_unshipped_records(tmp_path, batches=20, ship=5)
    state = json.loads((tmp_path / "spool" / "state.json").read_text())
    state["released"] = 10_000
    (tmp_path / "spool" / "state.json").write_text(json.dumps(state))
    metrics, log = restart_and_stop(tmp_path, config)
    assert "claims 10000 released records" in log
    assert "auditlock_sidecar_spool_records_lost_total 0.0" in metrics
    events = stored_ledger(config).lines
    assert len(alerts(events)) == 1
    seen = {e["event"]["details"]["n"] for e in events if "n" in e["event"]["details"]}
    assert seen == set(range(20 * BATCH))
