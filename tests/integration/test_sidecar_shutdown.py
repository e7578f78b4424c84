"""Start-up and shutdown while the destination (SeaweedFS, S3 Object Lock) is down.

- Destination unreachable at start: the sidecar still starts, acknowledges events into
  its spool, and ships them once the destination is back (after a restart here).
- SIGTERM while the destination is down: the process exits within the grace period
  (code 1), and the next start ships everything the spool held.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.forward import RetransmittingClient, chunk_frame
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import s3_config, sidecar_process, stored_ledger

GRACE = 3.0


def send(client: RetransmittingClient, first: int, count: int) -> None:
    for start in range(first, first + count, 500):
        chunk = f"chunk-{start}"
        client.send(chunk, chunk_frame(start, 500, chunk), 500)


@pytest.mark.slow
def test_destination_down_at_start_and_at_sigterm(tmp_path: Path, seaweedfs_own: SeaweedFS) -> None:
    config = s3_config(
        tmp_path,
        seaweedfs_own,
        delivery={"retry_initial_seconds": 0.2, "retry_max_seconds": 1.0},
        shutdown_grace_seconds=GRACE,
    )
    # The sink gives up on a dead destination after about 2 s, not the default ~90 s of
    # backoff (over 10 s at start before intake opens): the shipper retries on its own.
    config["destination"]["options"]["retry"] = {"attempts": 3, "max_delay": 0.5, "deadline": 2}
    seaweedfs_own.stop()
    with sidecar_process(tmp_path, config) as sidecar:
        # 1. Down at start: intake still runs and acknowledges into the spool.
        sidecar.start(timeout=60)
        client = RetransmittingClient(sidecar.forward_port)
        send(client, 0, 5000)
        assert "degraded" in _readyz(sidecar)
        # What the chart's AuditlockDestinationFailing alert reads: the streak so far.
        assert sidecar.metric("auditlock_sidecar_destination_failing_seconds") > 0
        assert sidecar.terminate() == 0, sidecar.tail()  # nothing to drain: quick
        client.close()

        # 2. Back up: the restart ships the spooled events.
        seaweedfs_own.start()
        sidecar.start()
        client = RetransmittingClient(sidecar.forward_port)
        send(client, 5000, 1000)
        deadline = time.monotonic() + 60
        while "ledger_last_seq 5999.0" not in sidecar.metrics():
            assert time.monotonic() < deadline, sidecar.tail()
            time.sleep(0.2)
        assert sidecar.metric("auditlock_sidecar_destination_failing_seconds") == 0

        # 3. Down again, then SIGTERM: exit within the grace period, spool keeps events.
        seaweedfs_own.stop()
        send(client, 6000, 1000)
        started = time.monotonic()
        code = sidecar.terminate(timeout=GRACE + 30)
        took = time.monotonic() - started
        client.close()
        assert code == 1, sidecar.tail()
        assert took < GRACE + 2.0, f"shutdown took {took:.1f}s with a {GRACE}s grace period"

        # 4. Back up: everything arrives exactly once, the stream closes cleanly.
        seaweedfs_own.start()
        sidecar.start()
        assert sidecar.terminate() == 0, sidecar.tail()

    events, report = stored_ledger(config)
    numbers = [e["event"]["details"]["n"] for e in events]
    assert len(numbers) == len(set(numbers))
    assert sorted(numbers) == list(range(7000))
    assert all(s.closed for s in report.streams)


def _readyz(sidecar: object) -> str:
    import urllib.request

    url = f"{sidecar.health_url}/readyz"  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())
