"""The sidecar with a gs:// destination keeps its imports small (its RSS budget is 48 MiB).

A real sidecar process (`python -m auditlock.sidecar`, as in the container) validates
its config and execs the lean collector (handoff.py), which ships an event to
fake-gcs-server; then the collector is asked, by SIGUSR1, to write down `sys.modules`.
What it does not need must not be there:

* google-cloud-storage, google-api-core and protobuf: the gs:// sink uses google-auth
  and google-resumable-media directly;
* pydantic and the event model: the front end validated the config;
* charset-normalizer: requests falls back to UTF-8 without it;
* the ledger's verifier and proofs (auditlock.ledger exports lazily);
* aiohttp, also with alert rules in force that send to Alertmanager (their POST is
  written on asyncio streams, alerts/receivers/post.py).

What each would cost: docs/benchmarks.md, "Import costs".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.http_intake import event, post
from tests.servers.fakegcs import FakeGCS
from tests.servers.sidecar import ROOT, make_config, readyz, wait_for

# A sitecustomize on PYTHONPATH runs in every interpreter the sidecar starts, including
# the collector it execs into: it installs a SIGUSR1 handler that writes the loaded
# module names (and whether this is the collector) to $MODULES_OUT.
SITECUSTOMIZE = """
import json, os, signal, sys
def _dump(*_):
    out = os.environ["MODULES_OUT"]
    with open(out + ".tmp", "w") as f:
        json.dump({"argv": sys.argv, "modules": sorted(k for k, v in sys.modules.items() if v)}, f)
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, _dump)
"""

NOT_IMPORTED = (
    "google.cloud.storage",
    "google.api_core",
    "google.protobuf",
    "pydantic",
    "pydantic_core",
    "charset_normalizer",
    "auditlock.ledger.event",
    "auditlock.ledger.verify",
    "auditlock.ledger.proof",
    "aiohttp",
)


def post_event(port: int) -> None:
    status, answer = post(port, event(1))
    assert status == 202, answer


def test_sidecar_with_gcs_does_not_import_the_full_client(
    fake_gcs: FakeGCS, gcs_bucket: str, tmp_path: Path
) -> None:
    rules = tmp_path / "alerts.json"  # a rule that fires on the event below
    rules.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "name": "deletes",
                        "namespace": "shop",
                        "spec": {
                            "summary": "x",
                            "match": [{"field": "action", "equals": "delete"}],
                        },
                    }
                ],
                "alertmanager_url": "http://127.0.0.1:9",
            }
        )
    )
    config = make_config(
        tmp_path,
        f"gs://{gcs_bucket}/trail",
        ports=True,
        destination={"options": fake_gcs.destination_options()},
        alerts={"rules_file": str(rules)},
    )
    config_path = tmp_path / "sidecar.json"
    config_path.write_text(json.dumps(config))
    modules_path = tmp_path / "modules.json"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, MODULES_OUT=str(modules_path))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
    log = (tmp_path / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditlock.sidecar", "--config", str(config_path)],
        stdout=log,
        stderr=log,
        cwd=ROOT,
        env=env,
    )
    log.close()
    try:
        health = f"http://127.0.0.1:{config['health']['port']}"
        wait_for(lambda: readyz(health), 30, "the sidecar to be ready")
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
    dump = json.loads(modules_path.read_text())
    assert dump["argv"][1:] == ["--validated-config-fd", dump["argv"][2]]  # the collector
    modules = set(dump["modules"])
    assert "character detection" not in (tmp_path / "sidecar.log").read_text()  # no warning
    assert "auditlock.sinks.gcs" in modules  # the gs:// sink did the shipping
    loaded = sorted(
        m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_IMPORTED)
    )
    assert loaded == []
