"""s3:// destination against SeaweedFS, which enforces S3 Object Lock like AWS."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from auditlock import sinks
from auditlock.sinks import (
    DestinationError,
    LockMode,
    ObjectConflict,
    ObjectNotFound,
    RetentionSpec,
    TransientError,
)
from auditlock.sinks.retry import RetryPolicy
from tests.servers.seaweedfs import SeaweedFS

LOCKED_1D = RetentionSpec(period=timedelta(days=1), mode=LockMode.LOCKED)


def test_put_writes_a_compliance_locked_object(seaweedfs: SeaweedFS, s3_locked_bucket: str) -> None:
    dest = seaweedfs.destination(s3_locked_bucket)
    before = datetime.now(UTC)
    result = dest.put("streams/a/seg-1", b"segment bytes", LOCKED_1D)
    assert result.created
    # Read the lock back with the raw client, not through our own code.
    head = seaweedfs.client().head_object(Bucket=s3_locked_bucket, Key="trail/streams/a/seg-1")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=1) - timedelta(seconds=2) <= until
    assert until <= datetime.now(UTC) + timedelta(days=1, seconds=1)  # rounded up
    assert dest.retention("streams/a/seg-1").mode is LockMode.LOCKED
    assert dest.get("streams/a/seg-1") == b"segment bytes"


def test_governance_mode_and_legal_hold(seaweedfs: SeaweedFS, s3_locked_bucket: str) -> None:
    dest = seaweedfs.destination(s3_locked_bucket)
    spec = RetentionSpec(timedelta(hours=2), LockMode.UNLOCKED, legal_hold=True)
    dest.put("gov", b"x", spec)
    r = dest.retention("gov")
    assert r.mode is LockMode.UNLOCKED and r.legal_hold
    hold = seaweedfs.client().get_object_legal_hold(Bucket=s3_locked_bucket, Key="trail/gov")
    assert hold["LegalHold"]["Status"] == "ON"


def test_server_refuses_deleting_and_shortening_what_we_wrote(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    dest = seaweedfs.destination(s3_locked_bucket)
    dest.put("locked", b"evidence", LOCKED_1D)
    s3 = seaweedfs.client()
    version = s3.head_object(Bucket=s3_locked_bucket, Key="trail/locked")["VersionId"]
    with pytest.raises(ClientError) as deleting:
        s3.delete_object(Bucket=s3_locked_bucket, Key="trail/locked", VersionId=version)
    assert deleting.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as shortening:
        s3.put_object_retention(
            Bucket=s3_locked_bucket,
            Key="trail/locked",
            VersionId=version,
            Retention={
                "Mode": "COMPLIANCE",
                "RetainUntilDate": datetime.now(UTC) + timedelta(hours=1),
            },
        )
    assert shortening.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert dest.get("locked") == b"evidence"


def test_same_bytes_twice_is_one_version(seaweedfs: SeaweedFS, s3_locked_bucket: str) -> None:
    dest = seaweedfs.destination(s3_locked_bucket)
    first = dest.put("seg", b"same", LOCKED_1D)
    second = dest.put("seg", b"same", LOCKED_1D)
    assert first.created and not second.created
    assert second.retention is not None and second.retention.mode is LockMode.LOCKED
    versions = seaweedfs.client().list_object_versions(Bucket=s3_locked_bucket, Prefix="trail/seg")
    assert len(versions.get("Versions", [])) == 1


@pytest.mark.parametrize("conditional", [True, False], ids=["if-none-match", "check-then-put"])
def test_different_bytes_are_refused_and_nothing_is_overwritten(
    seaweedfs: SeaweedFS, s3_locked_bucket: str, conditional: bool
) -> None:
    dest = seaweedfs.destination(s3_locked_bucket, conditional_put=conditional)
    dest.put("seg", b"original", LOCKED_1D)
    with pytest.raises(ObjectConflict, match="refusing to overwrite"):
        dest.put("seg", b"tampered", LOCKED_1D)
    assert dest.get("seg") == b"original"
    versions = seaweedfs.client().list_object_versions(Bucket=s3_locked_bucket, Prefix="trail/seg")
    assert len(versions.get("Versions", [])) == 1


def test_concurrent_writers_of_one_name_create_one_version(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    dest = seaweedfs.destination(s3_locked_bucket)
    results: list[bool] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            results.append(dest.put("raced", b"identical", LOCKED_1D).created)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results.count(True) == 1 and len(results) == 6
    versions = seaweedfs.client().list_object_versions(
        Bucket=s3_locked_bucket, Prefix="trail/raced"
    )
    assert len(versions.get("Versions", [])) == 1


def test_list_is_relative_to_the_url_prefix_and_sorted(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    dest = seaweedfs.destination(s3_locked_bucket, prefix="p/q")
    seaweedfs.client().put_object(Bucket=s3_locked_bucket, Key="p/other", Body=b"not ours")
    for name in ["b/2", "a/1", "b/1"]:
        dest.put(name, name.encode(), LOCKED_1D)
    assert list(dest.list()) == ["a/1", "b/1", "b/2"]
    assert list(dest.list("b/")) == ["b/1", "b/2"]
    root = seaweedfs.destination(s3_locked_bucket, prefix="")
    assert "p/q/a/1" in list(root.list())


def test_list_pages_through_more_than_one_page(seaweedfs: SeaweedFS, s3_locked_bucket: str) -> None:
    dest = seaweedfs.destination(s3_locked_bucket)
    names = [f"n/{i:04d}" for i in range(1005)]
    s3 = seaweedfs.client()
    for n in names:  # raw puts: fast, and list() is what is under test
        s3.put_object(Bucket=s3_locked_bucket, Key=f"trail/{n}", Body=b"")
    assert list(dest.list("n/")) == names


def test_check_passes_a_locked_versioned_bucket(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    report = seaweedfs.destination(s3_locked_bucket).check(LOCKED_1D)
    assert report.ok and report.worm, report.summary()
    assert report.facts["object_lock_enabled"] is True
    assert report.facts["versioning"] == "Enabled"


def test_check_reports_default_retention(seaweedfs: SeaweedFS, s3_locked_bucket: str) -> None:
    seaweedfs.client().put_object_lock_configuration(
        Bucket=s3_locked_bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    report = seaweedfs.destination(s3_locked_bucket).check(RetentionSpec(timedelta(days=30)))
    assert report.facts["default_retention"] == {"mode": "GOVERNANCE", "days": 1}
    assert any("shorter than the required 30 days" in n for n in report.notices)


def test_check_fails_a_bucket_without_object_lock_with_reasons(seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.make_bucket(object_lock=False)
    report = seaweedfs.destination(bucket).check(LOCKED_1D)
    assert not report.ok and not report.worm
    text = report.summary()
    assert "Object Lock is not enabled" in text
    assert "Versioning" in text  # a plain bucket is unversioned: both reasons are given


def test_put_into_a_bucket_without_object_lock_is_not_a_silent_success(
    seaweedfs: SeaweedFS,
) -> None:
    bucket = seaweedfs.make_bucket(object_lock=False)
    dest = seaweedfs.destination(bucket)
    try:
        dest.put("x", b"x", LOCKED_1D)
    except DestinationError as exc:
        assert "Object Lock is not enabled" in str(exc)
        return
    # If the server accepted the request, it must at least report the lock it applied.
    r = dest.retention("x")
    assert r.mode is LockMode.LOCKED, "server stored the object without the asked-for lock"


def test_check_fails_a_missing_bucket(seaweedfs: SeaweedFS) -> None:
    report = seaweedfs.destination("no-such-bucket-here").check(LOCKED_1D)
    assert not report.ok
    assert "does not exist" in report.summary()


def test_put_to_missing_bucket_is_a_clear_error(seaweedfs: SeaweedFS) -> None:
    """AWS answers NoSuchBucket. SeaweedFS 4.48 answers 400 and creates the bucket (without
    Object Lock) as a side effect, so our diagnosis then finds a bucket without locks;
    either way the write fails with a sentence saying what to fix."""
    with pytest.raises(DestinationError, match=r"does not exist|Object Lock is not enabled"):
        seaweedfs.destination("no-such-bucket-put").put("x", b"x", LOCKED_1D)


def test_wrong_credentials_are_a_clear_error_not_a_retry(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    options = seaweedfs.destination_options() | {"secret_access_key": "wrong"}
    dest = sinks.open(f"s3://{s3_locked_bucket}/t", **options)
    started = time.monotonic()
    with pytest.raises(DestinationError, match="access denied") as err:
        dest.put("x", b"x", LOCKED_1D)
    assert not isinstance(err.value, TransientError)
    assert time.monotonic() - started < 5
    report = dest.check(LOCKED_1D)
    assert not report.ok and "denied" in report.summary()


def test_endpoint_from_url_query(seaweedfs: SeaweedFS, s3_locked_bucket: str) -> None:
    url = f"s3://{s3_locked_bucket}/q?endpoint={seaweedfs.endpoint}&region=us-east-1"
    dest = sinks.open(
        url,
        access_key_id=seaweedfs.access_key,
        secret_access_key=seaweedfs.secret_key,
    )
    dest.put("x", b"via query", LOCKED_1D)
    assert dest.get("x") == b"via query"


def test_server_down_is_retried_then_a_transient_error_and_nothing_counted(
    seaweedfs_own: SeaweedFS,
) -> None:
    bucket = seaweedfs_own.make_bucket()
    fast = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1, deadline=5)
    dest = seaweedfs_own.destination(bucket, retry=fast, connect_timeout=1, read_timeout=2)
    seaweedfs_own.kill()
    with pytest.raises(TransientError, match="failed 3 time"):
        dest.put("seg", b"x" * 1000, LOCKED_1D)
    seaweedfs_own.start()
    with pytest.raises(ObjectNotFound):
        dest.get("seg")


def test_server_restart_during_retries_is_ridden_out(seaweedfs_own: SeaweedFS) -> None:
    bucket = seaweedfs_own.make_bucket()
    patient = RetryPolicy(attempts=50, base_delay=0.2, max_delay=1.0, deadline=60)
    dest = seaweedfs_own.destination(bucket, retry=patient, connect_timeout=1, read_timeout=5)
    seaweedfs_own.stop()
    restarter = threading.Timer(2.0, seaweedfs_own.start)
    restarter.start()
    try:
        result = dest.put("seg", b"survives", LOCKED_1D)
    finally:
        restarter.join()
    assert result.created
    assert dest.get("seg") == b"survives"
    assert dest.retention("seg").mode is LockMode.LOCKED


def test_governance_can_be_bypassed_by_an_admin_but_compliance_cannot(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    """Why check() warns about Unlocked/GOVERNANCE: an identity allowed to bypass it can
    delete the object; COMPLIANCE refuses even that identity."""
    dest = seaweedfs.destination(s3_locked_bucket)
    dest.put("gov", b"x", RetentionSpec(timedelta(days=1), LockMode.UNLOCKED))
    dest.put("comp", b"x", LOCKED_1D)
    s3 = seaweedfs.client()
    gov = s3.head_object(Bucket=s3_locked_bucket, Key="trail/gov")["VersionId"]
    comp = s3.head_object(Bucket=s3_locked_bucket, Key="trail/comp")["VersionId"]
    s3.delete_object(
        Bucket=s3_locked_bucket, Key="trail/gov", VersionId=gov, BypassGovernanceRetention=True
    )
    with pytest.raises(ClientError) as refused:
        s3.delete_object(
            Bucket=s3_locked_bucket,
            Key="trail/comp",
            VersionId=comp,
            BypassGovernanceRetention=True,
        )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ObjectNotFound):
        dest.get("gov")
    assert dest.get("comp") == b"x"
    report = dest.check(RetentionSpec(timedelta(days=1), LockMode.UNLOCKED))
    assert any("BypassGovernanceRetention" in n for n in report.notices)


def test_path_addressing_reaches_a_store_known_by_host_name(
    seaweedfs: SeaweedFS, s3_locked_bucket: str
) -> None:
    # In a cluster an S3-compatible store is a Service name (seaweedfs.storage:8333), and
    # <bucket>.seaweedfs.storage does not resolve: the policy's addressingStyle: path.
    by_name = seaweedfs.endpoint.replace("127.0.0.1", "localhost")
    options = {**seaweedfs.destination_options(), "endpoint_url": by_name}
    dest = sinks.open(f"s3://{s3_locked_bucket}/named", **options, addressing_style="path")
    dest.put("x", b"by host name", LOCKED_1D)
    assert dest.get("x") == b"by host name"
