"""Destination outage: SeaweedFS (S3 Object Lock) stopped while events keep coming, until
the spool is full and then 6 s longer (`AUDITLOCK_TEST_OUTAGE_HOLD_SECONDS`; the collector
retries its uploads every 0.5 s at most here, so that is about a dozen retries against a
dead endpoint).

Expected: nothing is lost; when the spool fills, intake pushes back (Forward acks are
withheld, HTTP answers 503 with Retry-After); when SeaweedFS is back, shipping catches
up, every event is in the locked bucket exactly once and the ledger verifies.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.forward import CHUNK_EVENTS, RetransmittingClient, chunk_frame
from tests.helpers.http_intake import post_bytes
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import metric_value, s3_config, sidecar_process, stored_ledger

FILL_WITHIN_SECONDS = 60.0
HOLD_SECONDS = float(os.environ.get("AUDITLOCK_TEST_OUTAGE_HOLD_SECONDS", "6"))
EVENTS = 60_000


def post_event(port: int) -> tuple[int, dict[str, str]]:
    body = json.dumps(
        {"category": "alert", "action": "probe", "actor": "test", "target": "spool"}
    ).encode()
    status, _, headers = post_bytes(port, body)
    return status, dict(headers)


@pytest.mark.slow
def test_seaweedfs_down_past_a_full_spool_loses_nothing(
    tmp_path: Path, seaweedfs_own: SeaweedFS
) -> None:
    config = s3_config(
        tmp_path,
        seaweedfs_own,
        spool={"max_bytes": 4 * 1024 * 1024, "segment_bytes": 512 * 1024},
        delivery={"retry_initial_seconds": 0.2, "retry_max_seconds": 0.5},
    )
    # One upload gives up on the dead endpoint after about 2 s (the default rides out ~90 s,
    # sleeping up to 10 s between tries, which would also delay the catch-up): the
    # collector's delivery retries above take over.
    config["destination"]["options"]["retry"] = {"attempts": 3, "max_delay": 0.5, "deadline": 2}
    with sidecar_process(tmp_path, config) as sidecar:
        sidecar.start()
        client = RetransmittingClient(sidecar.forward_port)
        last_ack = [time.monotonic()]

        def send_all() -> None:
            for first in range(0, EVENTS, CHUNK_EVENTS):
                chunk = f"chunk-{first}"
                client.send(chunk, chunk_frame(first, CHUNK_EVENTS, chunk), CHUNK_EVENTS)
                last_ack[0] = time.monotonic()
                if first == 10_000:
                    outage_started.wait()  # stopping SeaweedFS can take seconds
                    last_ack[0] = time.monotonic()

        outage_started = threading.Event()
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        while client.acked_events < 10_000:
            time.sleep(0.01)
        seaweedfs_own.stop()
        outage_started.set()
        down_at = time.monotonic()

        # The spool fills, then acks stop: push back instead of loss.
        while (
            time.monotonic() - last_ack[0] < 3.0
            or sidecar.metric("auditlock_sidecar_spool_fill_ratio") < 0.85
        ):
            assert time.monotonic() - down_at < FILL_WITHIN_SECONDS, "acks never stopped"
            time.sleep(0.1)
        acked_while_down = client.acked_events
        status, headers = post_event(sidecar.http_port)
        assert status == 503
        assert headers.get("Retry-After") == "1"
        metrics = sidecar.metrics()
        assert metric_value(metrics, "auditlock_sidecar_spool_fill_ratio") > 0.85
        # (The S3 sink retries on its own first; the lag shows the outage either way.)
        assert metric_value(metrics, "auditlock_sidecar_upload_lag_seconds") > 1.0
        assert sidecar.ready(), "the sidecar must stay up (ready, degraded) during an outage"

        time.sleep(HOLD_SECONDS)
        assert client.acked_events == acked_while_down, "acks while the spool was full"
        outage = time.monotonic() - down_at
        seaweedfs_own.start()
        back_at = time.monotonic()
        sender.join(300)
        assert not sender.is_alive()
        catch_up = time.monotonic() - back_at
        assert client.acked_events == EVENTS
        deadline = time.monotonic() + 60
        while sidecar.metric("auditlock_sidecar_upload_lag_seconds") > 0:
            assert time.monotonic() < deadline, "shipping did not catch up"
            time.sleep(0.2)
        assert post_event(sidecar.http_port)[0] == 202
        assert sidecar.terminate() == 0, sidecar.tail()
        client.close()

    events, report = stored_ledger(config)
    numbers = [e["event"]["details"]["n"] for e in events if e["event"]["action"] == "read"]
    assert len(numbers) == len(set(numbers)), "events stored twice"
    assert sorted(numbers) == list(range(EVENTS))
    assert all(s.closed for s in report.streams)
    print(
        f"outage {outage:.0f}s: {acked_while_down} events acked before push back; "
        f"all {EVENTS} acked {catch_up:.1f}s after SeaweedFS returned; ledger verified"
    )
