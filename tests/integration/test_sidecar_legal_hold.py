"""`retention.legalHold: true` puts the legal hold on every object the collector writes,
segments and checkpoints alike, not only on the key the operator publishes; and
`auditlock verify --require-retention` reports it.

Real processes: the collector (`python -m auditlock.sidecar`) writing to SeaweedFS with
Object Lock, events over its HTTP intake, the hold read back with the S3 API
(GetObjectLegalHold) and through `auditlock verify` as an auditor runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from auditlock.operator.sidecar_config import render
from auditlock.policy import parse_spec
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import ROOT, make_config, sidecar_process

EVENTS = 30


def test_every_segment_and_checkpoint_carries_the_legal_hold(
    seaweedfs: SeaweedFS, s3_locked_bucket: str, tmp_path: Path
) -> None:
    # What the operator renders for a policy with legalHold: true.
    spec = parse_spec(
        {
            "destination": {"s3": {"bucket": s3_locked_bucket, "prefix": "held"}},
            "retention": {"days": 1, "mode": "Unlocked", "legalHold": True},
        }
    )
    rendered = render(spec, cluster="rig")["destination"]
    assert rendered["legal_hold"] is True
    url = rendered["url"]
    config = make_config(
        tmp_path,
        url,
        ports=True,
        destination={
            "retention_days": rendered["retention_days"],
            "lock_mode": rendered["lock_mode"],
            "legal_hold": rendered["legal_hold"],
            "options": seaweedfs.destination_options(),
        },
        delivery={"batch_max_events": 10, "max_delay_seconds": 0.1},
    )
    with sidecar_process(tmp_path, config) as sidecar:
        sidecar.start()
        for i in range(EVENTS):
            body = json.dumps(
                {"category": "access", "action": "login", "actor": f"user-{i}", "target": "db"}
            ).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{sidecar.http_port}/v1/events",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status in (200, 202)
        assert sidecar.terminate() == 0, sidecar.tail()

    s3 = seaweedfs.client()
    listed = s3.list_objects_v2(Bucket=s3_locked_bucket, Prefix="held/")
    names = [o["Key"] for o in listed.get("Contents", [])]
    segments = [k for k in names if "/seg-" in k]
    checkpoints = [k for k in names if k.endswith(".ckpt")]
    assert len(segments) >= EVENTS // 10 and len(checkpoints) >= 2, names
    for key in names:
        hold = s3.get_object_legal_hold(Bucket=s3_locked_bucket, Key=key)
        assert hold["LegalHold"]["Status"] == "ON", key

    def cli_verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "auditlock", "verify", url,
             "--public-key", str(tmp_path / "key.pub.pem"), "--require-retention", "1", *extra],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **seaweedfs.env()},
        )  # fmt: skip

    done = cli_verify()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"legal hold on {len(names)} of {len(names)} objects" in done.stdout, done.stdout
    as_json = cli_verify("--json")
    report = json.loads(as_json.stdout)
    assert report["events_verified"] == EVENTS
    objects = {o["name"]: o for o in report["objects"]}
    assert set(objects) == {k.removeprefix("held/") for k in names}
    assert all(o["legal_hold"] for o in objects.values())
