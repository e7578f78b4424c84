"""Networks that drop mid-upload and servers that die mid-upload, on real servers.

A small TCP proxy sits between the client library and the server and cuts the first
connection(s) after a given number of request bytes, so the server sees a truncated
upload. The promise under test: a clear error or a retry, never a silent success, never
a partial object stored or counted as stored.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from auditlock import sinks
from auditlock.sinks import LockMode, ObjectNotFound, RetentionSpec, TransientError
from auditlock.sinks.retry import RetryPolicy
from tests.servers.fakegcs import FakeGCS
from tests.servers.seaweedfs import SeaweedFS

SPEC = RetentionSpec(timedelta(days=1), LockMode.LOCKED)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, recognisable bytes
PATIENT = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.2, deadline=30)


class CuttingProxy:
    """Forwards 127.0.0.1:port to an upstream port; the first `cuts` requests that send
    more than `cut_after` bytes have their connection reset at that point (a dropped
    network mid-upload). Smaller requests pass untouched."""

    def __init__(self, upstream_port: int, *, cut_after: int, cuts: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cut_count = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for args in ((client, upstream, self.cut_after), (upstream, client, None)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if limit is not None and sent + len(chunk) >= limit and self._take_cut():
                    dst.sendall(chunk[: limit - sent])
                    for s in (src, dst):  # RST both ways, like a dropped network
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        s.close()
                    return
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cut_count += 1
            return True

    def close(self) -> None:
        self._stop = True
        self._listener.close()


@pytest.fixture
def proxy_factory() -> Iterator[list[CuttingProxy]]:
    made: list[CuttingProxy] = []
    yield made
    for p in made:
        p.close()


def s3_through(
    proxy: CuttingProxy, server: SeaweedFS, bucket: str, **extra: object
) -> sinks.Destination:
    options = server.destination_options() | {"endpoint_url": proxy.endpoint} | extra
    return sinks.open(f"s3://{bucket}/drop", **options)


def test_s3_upload_cut_mid_body_is_retried_and_stored_whole_once(
    seaweedfs: SeaweedFS, s3_locked_bucket: str, proxy_factory: list[CuttingProxy]
) -> None:
    port = int(seaweedfs.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=300_000, cuts=1)
    proxy_factory.append(proxy)
    dest = s3_through(proxy, seaweedfs, s3_locked_bucket, retry=PATIENT)
    result = dest.put("seg", PAYLOAD, SPEC)
    assert proxy.cut_count == 1
    assert dest.get("seg") == PAYLOAD
    assert result.size == len(PAYLOAD)
    versions = seaweedfs.client().list_object_versions(Bucket=s3_locked_bucket, Prefix="drop/seg")
    assert [v["Size"] for v in versions.get("Versions", [])] == [len(PAYLOAD)]


def test_s3_upload_cut_every_time_fails_loudly_and_stores_nothing(
    seaweedfs: SeaweedFS, s3_locked_bucket: str, proxy_factory: list[CuttingProxy]
) -> None:
    port = int(seaweedfs.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=300_000, cuts=1000)
    proxy_factory.append(proxy)
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
    fake_gcs: FakeGCS, gcs_bucket: str, proxy_factory: list[CuttingProxy]
) -> None:
    proxy = CuttingProxy(fake_gcs.port, cut_after=300_000, cuts=1)
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
