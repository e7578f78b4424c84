"""Opt-in: gs:// against a real Google Cloud Storage bucket.

Runs only when AUDITLOCK_TEST_GCS_BUCKET names a bucket with Object Retention enabled
(`gcloud storage buckets create gs://B --enable-per-object-retention`) and Application
Default Credentials can act on it (GOOGLE_APPLICATION_CREDENTIALS, or
`gcloud auth application-default login`):

    AUDITLOCK_TEST_GCS_BUCKET=my-bucket .venv/bin/pytest -m gcs_real tests/integration

Objects are written under `auditlock-test/<random>/` with *Unlocked* one-day retention,
so the suite can prove that GCS refuses the delete and then lift the retention (with
storage.objects.overrideUnlockedRetention) and clean up. It never writes Locked objects,
which could not be removed for the retention period.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from auditlock import sinks
from auditlock.sinks import LockMode, ObjectConflict, RetentionSpec
from auditlock.sinks.gcs import GCSDestination

pytestmark = pytest.mark.gcs_real

BUCKET = os.environ.get("AUDITLOCK_TEST_GCS_BUCKET", "")
UNLOCKED_1D = RetentionSpec(period=timedelta(days=1), mode=LockMode.UNLOCKED)


def _credentials_problem() -> str | None:
    try:
        import google.auth

        google.auth.default()  # type: ignore[no-untyped-call]
    except Exception as exc:
        return f"no Google credentials ({exc.__class__.__name__})"
    return None


@pytest.fixture
def real_gcs() -> Iterator[GCSDestination]:
    if not BUCKET:
        pytest.skip("set AUDITLOCK_TEST_GCS_BUCKET (and credentials) to run the real-GCS suite")
    problem = _credentials_problem()
    if problem:
        pytest.skip(f"AUDITLOCK_TEST_GCS_BUCKET is set but {problem}")
    prefix = f"auditlock-test/{uuid.uuid4().hex}"
    dest = sinks.open(f"gs://{BUCKET}/{prefix}")
    assert isinstance(dest, GCSDestination)
    yield dest
    for blob in dest.client.list_blobs(BUCKET, prefix=prefix + "/"):
        if blob.retention.mode:
            blob.retention.mode = None
            blob.retention.retain_until_time = None
            blob.patch(override_unlocked_retention=True)
        if blob.temporary_hold:
            blob.temporary_hold = False
            blob.patch()
        blob.delete()


def test_real_bucket_passes_check(real_gcs: GCSDestination) -> None:
    report = real_gcs.check(UNLOCKED_1D)
    assert report.facts["exists"] and report.facts["object_retention_enabled"], report.summary()


def test_real_gcs_keeps_retention_and_refuses_delete(real_gcs: GCSDestination) -> None:
    from google.api_core.exceptions import Forbidden

    real_gcs.put("seg-1", b"segment", UNLOCKED_1D)
    r = real_gcs.retention("seg-1")
    assert r.mode is LockMode.UNLOCKED and r.retain_until is not None
    blob = real_gcs.bucket.blob(f"{real_gcs.prefix}/seg-1")
    with pytest.raises(Forbidden):
        blob.delete()
    assert real_gcs.get("seg-1") == b"segment"


def test_real_gcs_idempotent_and_conflict(real_gcs: GCSDestination) -> None:
    assert real_gcs.put("seg-2", b"a", UNLOCKED_1D).created
    assert not real_gcs.put("seg-2", b"a", UNLOCKED_1D).created
    with pytest.raises(ObjectConflict):
        real_gcs.put("seg-2", b"b", UNLOCKED_1D)
    assert list(real_gcs.list()) == ["seg-2"]
