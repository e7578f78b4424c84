"""Networks that drop mid-upload and servers that die mid-upload, on real servers.

A small TCP proxy sits between the client library and the server and cuts the first
connection(s) after a given number of request bytes, so the server sees a truncated
upload. The promise under test: a clear error or a retry, never a silent success, never
a partial object stored or counted as stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from auditlock import sinks
from auditlock.sinks import LockMode, ObjectNotFound, RetentionSpec, TransientError
from auditlock.sinks.retry import RetryPolicy
from tests.servers.fakegcs import FakeGCS
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.tcp_proxy import LoopbackProxy

SPEC = RetentionSpec(timedelta(days=1), LockMode.LOCKED)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, recognisable bytes
PATIENT = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.2, deadline=30)


@pytest.fixture
def proxy_factory() -> Iterator[list[LoopbackProxy]]:
    made: list[LoopbackProxy] = []
    yield made
    for p in made:
        p.close()


def s3_through(
    proxy: LoopbackProxy, server: SeaweedFS, bucket: str, **extra: object
) -> sinks.Destination:
    options = server.destination_options() | {"endpoint_url": proxy.endpoint} | extra
    return sinks.open(f"s3://{bucket}/drop", **options)


def _cutting_proxy(
    seaweedfs: SeaweedFS, proxy_factory: list[LoopbackProxy], cuts: int
) -> LoopbackProxy:
    """A proxy in front of SeaweedFS that resets the first `cuts` uploads after 300,000 bytes."""
    port = int(seaweedfs.endpoint.rsplit(":", 1)[1])
    proxy = LoopbackProxy(port, cut_after=300_000, cuts=cuts)
    proxy_factory.append(proxy)
    return proxy


def test_s3_upload_cut_mid_body_is_retried_and_stored_whole_once(
    seaweedfs: SeaweedFS, s3_locked_bucket: str, proxy_factory: list[LoopbackProxy]
) -> None:
    proxy = _cutting_proxy(seaweedfs, proxy_factory, cuts=1)
    dest = s3_through(proxy, seaweedfs, s3_locked_bucket, retry=PATIENT)
    result = dest.put("seg", PAYLOAD, SPEC)
    assert proxy.cut_count == 1
    assert dest.get("seg") == PAYLOAD
    assert result.size == len(PAYLOAD)
    versions = seaweedfs.client().list_object_versions(Bucket=s3_locked_bucket, Prefix="drop/seg")
    assert [v["Size"] for v in versions.get("Versions", [])] == [len(PAYLOAD)]


def test_s3_upload_cut_every_time_fails_loudly_and_stores_nothing(
    seaweedfs: SeaweedFS, s3_locked_bucket: str, proxy_factory: list[LoopbackProxy]
) -> None:
    proxy = _cutting_proxy(seaweedfs, proxy_factory, cuts=1000)
    few = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, deadline=10)
    dest = s3_through(proxy, seaweedfs, s3_locked_bucket, retry=few)
    with pytest.raises(TransientError):
        dest.put("seg", PAYLOAD, SPEC)
    direct = sinks.open(f"s3://{s3_locked_bucket}/drop", **seaweedfs.destination_options())
    with pytest.raises(ObjectNotFound):
        direct.get("seg")
    versions = seaweedfs.client().list_object_versions(Bucket=s3_locked_bucket, Prefix="drop/seg")
    assert versions.get("Versions", []) == []


def test_gcs_upload_cut_mid_body_is_retried_and_stored_whole_once(
    fake_gcs: FakeGCS, gcs_bucket: str, proxy_factory: list[LoopbackProxy]
) -> None:
    proxy = LoopbackProxy(fake_gcs.port, cut_after=300_000, cuts=1)
    proxy_factory.append(proxy)
    options = fake_gcs.destination_options() | {"endpoint": proxy.endpoint, "retry": PATIENT}
    dest = sinks.open(f"gs://{gcs_bucket}/drop", **options)
    result = dest.put("seg", PAYLOAD, SPEC)
    assert proxy.cut_count == 1 and result.created
    blob = fake_gcs.client().bucket(gcs_bucket).get_blob("drop/seg")
    assert blob.size == len(PAYLOAD)
    assert dest.get("seg") == PAYLOAD


def test_s3_server_killed_during_uploads_never_leaves_a_partial_object(
    seaweedfs_own: SeaweedFS,
) -> None:
    """Kill -9 SeaweedFS while 1 MiB uploads are in flight, restart it, and finish: every
    object that exists afterwards is whole, and every put either succeeded or raised."""
    bucket = seaweedfs_own.make_bucket()
    options = seaweedfs_own.destination_options() | {
        "retry": RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, deadline=5),
        "connect_timeout": 1,
        "read_timeout": 5,
    }
    dest = sinks.open(f"s3://{bucket}/kill", **options)
    outcomes: dict[str, str] = {}

    def writer(i: int) -> None:
        name = f"seg-{i}"
        try:
            dest.put(name, PAYLOAD[:-1] + bytes([i]), SPEC)
            outcomes[name] = "stored"
        except TransientError:
            outcomes[name] = "failed"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(24)]
    for t in threads[:12]:
        t.start()
    seaweedfs_own.kill()
    for t in threads[12:]:
        t.start()
    for t in threads:
        t.join(60)
    seaweedfs_own.start()
    check = sinks.open(f"s3://{bucket}/kill", **seaweedfs_own.destination_options())
    for i in range(24):
        name = f"seg-{i}"
        try:
            data = check.get(name)
        except ObjectNotFound:
            assert outcomes[name] == "failed", f"{name} reported stored but is missing"
            continue
        assert data == PAYLOAD[:-1] + bytes([i]), f"{name} is partial or wrong"
    assert "failed" in outcomes.values()  # the kill really hit some uploads
