"""`auditlock synth` + `auditlock verify` on s3:// (SeaweedFS) and gs:// (fake-gcs-server).

The CLI runs as a subprocess configured only by the standard environment (AWS_* with
AWS_ENDPOINT_URL_S3; STORAGE_EMULATOR_HOST), the way an auditor would run it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers.auditlock_child import run_auditlock
from tests.servers.seaweedfs import SeaweedFS

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    done = run_auditlock("keys", "generate", "--out", str(out), timeout=60)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(params=["s3", "gs"])
def bucket(request: pytest.FixtureRequest) -> tuple[str, Runner]:
    """`<scheme>://<a fresh bucket>/ledger` on the session's server, and the CLI set up
    to reach that server."""
    server = request.getfixturevalue({"s3": "seaweedfs", "gs": "fake_gcs"}[request.param])
    return f"{request.param}://{server.make_bucket()}/ledger", cli(server.env())


def cli(env: dict[str, str]) -> Runner:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_auditlock(*args, env=env)

    return run


def synth(run: Runner, url: str, keys: Path, retention_days: float) -> None:
    done = run(
        "synth", "--store", url, "--key", str(keys / "signing.key"), "--streams", "2",
        "--events", "300", "--segment-events", "100", "--retention-days", str(retention_days),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_synth_then_verify_passes_with_required_retention(
    bucket: tuple[str, Runner], keys: Path
) -> None:
    url, run = bucket
    synth(run, url, keys, retention_days=30)
    pub = str(keys / "signing.pub")
    ok = run("verify", url, "--public-key", pub, "--require-retention", "29", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["result"] == "PASS" and report["events_verified"] == 600
    # Every object is listed with the lock the store reports for it.
    assert report["objects"], "verify listed no objects"
    for obj in report["objects"]:
        assert obj["mode"] == "Locked" and obj["retain_until"], obj
    too_long = run("verify", url, "--public-key", pub, "--require-retention", "60", "--json")
    assert too_long.returncode == 1, too_long.stdout + too_long.stderr
    assert json.loads(too_long.stdout)["findings"]


def test_verify_with_jobs_reads_the_store_from_each_worker_and_reports_the_same(
    bucket: tuple[str, Runner], keys: Path
) -> None:
    url, run = bucket
    done = run(
        "synth", "--store", url, "--key", str(keys / "signing.key"), "--streams", "2",
        "--events", "40", "--segment-events", "20",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pub = str(keys / "signing.pub")
    one = run("verify", url, "--public-key", pub, "--until", "2100-01-01T00:00:00Z", "--json")
    two = run("verify", url, "--public-key", pub, "--until", "2100-01-01T00:00:00Z", "--json",
              "--jobs", "2")  # fmt: skip
    assert one.returncode == two.returncode, one.stdout + two.stdout + two.stderr
    first, second = json.loads(one.stdout), json.loads(two.stdout)
    assert second["events_verified"] == 80 and len(second["streams"]) == 2
    assert first == second


def test_verify_detects_an_overwritten_latest_version_on_s3(
    seaweedfs: SeaweedFS, keys: Path
) -> None:
    """Object Lock keeps the original version; a writer that bypasses auditlock can still
    add a newer version on top. verify reads the latest version and must say so."""
    bucket = seaweedfs.make_bucket()
    run = cli(seaweedfs.env())
    synth(run, f"s3://{bucket}/ledger", keys, retention_days=1)
    s3 = seaweedfs.client()
    keys_listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    segment = next(k for k in keys_listed if "seg" in k)
    original = s3.get_object(Bucket=bucket, Key=segment)["Body"].read()
    s3.put_object(Bucket=bucket, Key=segment, Body=original.replace(b"0", b"1", 1))
    result = run("verify", f"s3://{bucket}/ledger", "--public-key", str(keys / "signing.pub"))
    assert result.returncode == 1, result.stdout + result.stderr


def test_verify_of_missing_bucket_is_an_io_error_saying_so(seaweedfs: SeaweedFS) -> None:
    result = cli(seaweedfs.env())("verify", "s3://no-such-bucket-verify/ledger")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bucket 'no-such-bucket-verify' does not exist" in result.stderr


def test_verify_with_wrong_credentials_says_access_denied(seaweedfs: SeaweedFS) -> None:
    env = seaweedfs.env() | {"AWS_SECRET_ACCESS_KEY": "wrong"}
    result = cli(env)("verify", f"s3://{seaweedfs.make_bucket()}/ledger")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "access denied" in result.stderr
