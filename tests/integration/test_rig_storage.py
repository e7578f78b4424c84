"""Smoke tests proving the storage servers are real: each would fail against a mock.

SeaweedFS enforces S3 Object Lock like AWS does (moto, for one, lets COMPLIANCE
retention be shortened). fake-gcs-server round-trips per-object retention but does not
enforce it - see tests/servers/fakegcs.py for what it does not do.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.servers.fakegcs import FakeGCS
from tests.servers.seaweedfs import _PORT_FLAGS, SeaweedFS, ServerStartError, free_ports


def _error_status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


def _put_locked(s3: Any, bucket: str) -> tuple[str, datetime]:
    """Object "locked" (b"evidence") under COMPLIANCE retention for a day: its version id
    and retain-until date."""
    until = datetime.now(UTC) + timedelta(days=1)
    put = s3.put_object(
        Bucket=bucket,
        Key="locked",
        Body=b"evidence",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    return put["VersionId"], until


def test_seaweedfs_refuses_deleting_a_compliance_locked_version(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    s3 = seaweedfs.client()
    version, _ = _put_locked(s3, s3_locked_bucket)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=s3_locked_bucket, Key="locked", VersionId=version)
    assert _error_status(refused.value) == 403
    body = s3.get_object(Bucket=s3_locked_bucket, Key="locked", VersionId=version)["Body"]
    assert body.read() == b"evidence"


def test_seaweedfs_refuses_shortening_compliance_retention(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    s3 = seaweedfs.client()
    version, until = _put_locked(s3, s3_locked_bucket)
    with pytest.raises(ClientError) as refused:
        s3.put_object_retention(
            Bucket=s3_locked_bucket,
            Key="locked",
            VersionId=version,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=12)},
        )
    assert _error_status(refused.value) == 403
    kept = s3.get_object_retention(Bucket=s3_locked_bucket, Key="locked", VersionId=version)
    assert abs(kept["Retention"]["RetainUntilDate"] - until) < timedelta(seconds=2)


def test_seaweedfs_keeps_data_across_a_restart_on_the_same_ports(
    seaweedfs_own: SeaweedFS,
) -> None:
    bucket = seaweedfs_own.make_bucket()
    seaweedfs_own.client().put_object(Bucket=bucket, Key="k", Body=b"durable")
    endpoint = seaweedfs_own.endpoint
    seaweedfs_own.stop()
    assert not seaweedfs_own.running
    seaweedfs_own.start()
    assert seaweedfs_own.endpoint == endpoint
    got = seaweedfs_own.client().get_object(Bucket=bucket, Key="k")["Body"].read()
    assert got == b"durable"


def test_object_retention_round_trips_through_fake_gcs_server(
    fake_gcs: FakeGCS, gcs_bucket: str
) -> None:
    client = fake_gcs.client()
    until = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    blob = client.bucket(gcs_bucket).blob("seg/1")
    blob.retention.mode = "Locked"
    blob.retention.retain_until_time = until
    blob.upload_from_string(b"segment", if_generation_match=0)

    fetched = client.bucket(gcs_bucket).get_blob("seg/1")
    assert fetched is not None
    assert fetched.retention.mode == "Locked"
    assert fetched.retention.retain_until_time == until
    assert fetched.md5_hash is not None
    assert fetched.download_as_bytes() == b"segment"
    assert hashlib.md5(b"segment").digest() == base64.b64decode(fetched.md5_hash)


# -- the rig's own failure modes: one clear error naming what failed and its log, no hang --


def test_missing_weed_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDITLOCK_WEED", str(tmp_path / "no-weed"))
    with pytest.raises(ServerStartError, match=r"AUDITLOCK_WEED=.*no-weed"):
        SeaweedFS(tmp_path / "sw").start()


def test_missing_fake_gcs_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDITLOCK_FAKE_GCS", str(tmp_path / "no-fake-gcs"))
    with pytest.raises(ServerStartError, match="not found or not executable"):
        FakeGCS(tmp_path / "gcs").start()


def test_seaweedfs_on_a_port_in_use_fails_fast_naming_its_log(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        server = SeaweedFS(tmp_path / "sw")
        server.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        server.ports["s3.port"] = busy.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ServerStartError) as err:
            server.start(timeout=30)
    assert time.monotonic() - started < 30
    assert str(server.log_path) in str(err.value)
    assert not server.running


def test_fake_gcs_on_a_port_in_use_fails_fast_naming_its_log(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        server = FakeGCS(tmp_path / "gcs", port=busy.getsockname()[1])
        with pytest.raises(ServerStartError, match="already in use") as err:
            server.start(timeout=20)
    assert str(server.log_path) in str(err.value)
