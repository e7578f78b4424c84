"""The sidecar with a gs:// destination keeps its imports small (its RSS budget is 48 MiB).

A real sidecar process (`python -m auditlock.sidecar`, as in the container) ships an
event to fake-gcs-server; then it is asked, by SIGUSR1, to write down `sys.modules`.
What the gs:// sink no longer needs must not be there: google-cloud-storage,
google-api-core and protobuf (~8 MiB together), and the ledger's verifier and proofs
(auditlock.ledger exports lazily). (auditlock.ledger.event still comes in through
ledger/normalize.py, which takes its vocabulary constants from the event model.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.servers.fakegcs import FakeGCS
from tests.servers.sidecar import ROOT, make_config

# Runs the sidecar exactly as `python -m auditlock.sidecar --config FILE`, plus a SIGUSR1
# handler that writes the loaded module names to a file.
PROBE = """
import json, runpy, signal, sys
config, out = sys.argv[1], sys.argv[2]
def dump(*_):
    with open(out + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    import os
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["auditlock.sidecar", "--config", config]
runpy.run_module("auditlock.sidecar", run_name="__main__", alter_sys=True)
"""

NOT_IMPORTED = (
    "google.cloud.storage",
    "google.api_core",
    "google.protobuf",
    "auditlock.ledger.verify",
    "auditlock.ledger.proof",
)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def post_event(port: int) -> None:
    event = {
        "category": "data",
        "action": "delete",
        "outcome": "success",
        "actor": {"kind": "user", "name": "bob", "ip": "10.0.0.9"},
        "target": {"resource": "invoices", "name": "inv-1"},
        "request_id": "req-1",
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202


def ready(health_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=1) as a:
            return bool(a.status == 200)
    except OSError:
        return False


def test_sidecar_with_gcs_does_not_import_the_full_client(
    fake_gcs: FakeGCS, gcs_bucket: str, tmp_path: Path
) -> None:
    config = make_config(
        tmp_path,
        f"gs://{gcs_bucket}/trail",
        ports=True,
        destination={"options": fake_gcs.destination_options()},
    )
    config_path = tmp_path / "sidecar.json"
    config_path.write_text(json.dumps(config))
    modules_path = tmp_path / "modules.json"
    log = (tmp_path / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(config_path), str(modules_path)],
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    log.close()
    try:
        wait_for(lambda: ready(config["health"]["port"]), 30, "the sidecar to be ready")
        post_event(config["sources"]["http"]["port"])
        bucket = fake_gcs.client().bucket(gcs_bucket)

        def shipped() -> bool:
            return any("/seg-" in b.name for b in bucket.list_blobs(prefix="trail/"))

        wait_for(shipped, 30, "a segment in the bucket")
        proc.send_signal(signal.SIGUSR1)
        wait_for(modules_path.exists, 10, "the module list")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    modules = set(json.loads(modules_path.read_text()))
    assert "auditlock.sinks.gcs" in modules  # the gs:// sink did the shipping
    loaded = sorted(
        m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_IMPORTED)
    )
    assert loaded == []
