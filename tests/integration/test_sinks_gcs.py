"""gs:// destination against fake-gcs-server with the official client library.

fake-gcs-server is evidence for: uploads and downloads, listing, per-object retention
round-trips, the create-only precondition (`ifGenerationMatch=0` -> 412), MD5 checks.
It does NOT keep bucket retention policies, does not report `objectRetention`, and does
not refuse deleting or overwriting a retained object - those are covered by
tests/unit/test_sinks_gcs_recorded.py (recorded API responses) and the opt-in
tests/integration/test_sinks_gcs_real.py (a real bucket).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auditlock import sinks
from auditlock.sinks import (
    DestinationError,
    LockMode,
    ObjectConflict,
    RetentionSpec,
    TransientError,
)
from auditlock.sinks.retry import RetryPolicy
from tests.servers.fakegcs import FakeGCS

LOCKED_7D = RetentionSpec(period=timedelta(days=7), mode=LockMode.LOCKED)


def test_put_sets_per_object_retention_write_time_plus_period(
    fake_gcs: FakeGCS, gcs_bucket: str
) -> None:
    dest = fake_gcs.destination(gcs_bucket)
    before = datetime.now(UTC).replace(microsecond=0)
    result = dest.put("streams/a/seg-1", b"segment", LOCKED_7D)
    after = datetime.now(UTC)
    assert result.created
    # Read back with the raw client, not through our own code.
    blob = fake_gcs.client().bucket(gcs_bucket).get_blob("trail/streams/a/seg-1")
    assert blob.retention.mode == "Locked"
    until = blob.retention.retain_until_time
    assert before + timedelta(days=7) <= until <= after + timedelta(days=7, seconds=1)
    read_back = dest.retention("streams/a/seg-1")
    assert result.retention is not None
    assert (read_back.mode, read_back.retain_until) == (LockMode.LOCKED, until)
    assert (result.retention.mode, result.retention.retain_until) == (LockMode.LOCKED, until)
    assert dest.get("streams/a/seg-1") == b"segment"


def test_unlocked_mode(fake_gcs: FakeGCS, gcs_bucket: str) -> None:
    """(fake-gcs-server drops temporaryHold; the hold is tested on recorded responses.)"""
    dest = fake_gcs.destination(gcs_bucket)
    dest.put("u", b"x", RetentionSpec(timedelta(days=1), LockMode.UNLOCKED))
    blob = fake_gcs.client().bucket(gcs_bucket).get_blob("trail/u")
    assert blob.retention.mode == "Unlocked"
    assert dest.retention("u").mode is LockMode.UNLOCKED


def test_same_bytes_again_is_idempotent(fake_gcs: FakeGCS, gcs_bucket: str) -> None:
    dest = fake_gcs.destination(gcs_bucket)
    first = dest.put("seg", b"same", LOCKED_7D)
    generation = fake_gcs.client().bucket(gcs_bucket).get_blob("trail/seg").generation
    second = dest.put("seg", b"same", LOCKED_7D)
    assert first.created and not second.created
    assert fake_gcs.client().bucket(gcs_bucket).get_blob("trail/seg").generation == generation


def test_different_bytes_are_refused_and_not_overwritten(
    fake_gcs: FakeGCS, gcs_bucket: str
) -> None:
    dest = fake_gcs.destination(gcs_bucket)
    dest.put("seg", b"original", LOCKED_7D)
    with pytest.raises(ObjectConflict, match="refusing to overwrite"):
        dest.put("seg", b"tampered", LOCKED_7D)
    assert dest.get("seg") == b"original"


def test_list_relative_to_prefix_sorted_and_paged(fake_gcs: FakeGCS, gcs_bucket: str) -> None:
    dest = fake_gcs.destination(gcs_bucket, prefix="p/q")
    raw = fake_gcs.client().bucket(gcs_bucket)
    raw.blob("p/other").upload_from_string(b"not ours")
    names = [f"n/{i:04d}" for i in range(1003)]
    for n in names:
        raw.blob(f"p/q/{n}").upload_from_string(b"")
    dest.put("a/1", b"a", LOCKED_7D)
    listed = list(dest.list())
    assert listed == ["a/1", *names]
    assert list(dest.list("n/000")) == names[:10]


def test_missing_bucket_is_a_clear_error(fake_gcs: FakeGCS) -> None:
    dest = fake_gcs.destination("no-such-bucket")
    with pytest.raises(DestinationError, match="does not exist"):
        dest.put("x", b"x", LOCKED_7D)
    report = dest.check(LOCKED_7D)
    assert not report.ok and "does not exist" in report.summary()


def test_check_reads_the_bucket_and_judges_what_fake_gcs_reports(
    fake_gcs: FakeGCS, gcs_bucket: str
) -> None:
    """fake-gcs-server does not report `objectRetention`, so check must fail it: the
    judgement is driven by what the server says, never assumed."""
    report = fake_gcs.destination(gcs_bucket).check(LOCKED_7D)
    assert report.facts["exists"] is True
    assert report.facts["object_retention_enabled"] is False
    assert report.facts["versioning"] is False
    assert not report.ok
    assert "Object Retention is not enabled" in report.summary()
    assert report.facts["writable"] is None  # the emulator has no testIamPermissions
    assert any("does not implement testIamPermissions" in n for n in report.notices)


def test_server_down_is_a_transient_error_after_retries(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with FakeGCS.started(tmp_path_factory.mktemp("gcs-down")) as server:
        bucket = server.make_bucket()
        fast = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1, deadline=5)
        dest = server.destination(bucket, retry=fast, timeout=2)
        server.stop()
        with pytest.raises(TransientError, match="failed 3 time"):
            dest.put("seg", b"x", LOCKED_7D)


def test_url_query_endpoint_and_emulator_env(
    fake_gcs: FakeGCS, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d1 = sinks.open(f"gs://{gcs_bucket}/q?endpoint={fake_gcs.endpoint}&project=p")
    d1.put("one", b"1", LOCKED_7D)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    d2 = sinks.open(f"gs://{gcs_bucket}/q")
    assert d2.get("one") == b"1"
