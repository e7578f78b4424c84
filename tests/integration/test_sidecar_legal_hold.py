"""`retention.legalHold: true` puts the legal hold on every object the collector writes,
segments and checkpoints alike, not only on the key the operator publishes; and
`auditlock verify --require-retention` reports it.

Real processes: the collector (`python -m auditlock.sidecar`) writing to SeaweedFS with
Object Lock, events over its HTTP intake, the hold read back with the S3 API
(GetObjectLegalHold) and through `auditlock verify` as an auditor runs it.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import unquote

from auditlock.operator.sidecar_config import render
from auditlock.policy import parse_spec
from tests.servers.auditlock_child import run_auditlock
from tests.servers.fakegcs import FakeGCS
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import make_config, sidecar_process

EVENTS = 30


def _send(port: int, count: int) -> None:
    for i in range(count):
        body = json.dumps(
            {"category": "access", "action": "login", "actor": f"user-{i}", "target": "db"}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/events",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status in (200, 202)


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
        _send(sidecar.http_port, EVENTS)
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
        return run_auditlock(
            "verify", url, "--public-key", str(tmp_path / "key.pub.pem"),
            "--require-retention", "1", *extra, env=seaweedfs.env(), timeout=120,
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


class _RecordingProxy:
    """Plain-HTTP reverse proxy in front of fake-gcs-server that records each request's
    method, path and body: what the collector asked of the store."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self.requests: list[tuple[str, str, bytes]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.requests.append((self.command, self.path, body))
                conn = http.client.HTTPConnection(str(target.hostname), target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_gcs_collector_asks_for_a_temporary_hold_on_every_object(
    fake_gcs: FakeGCS, gcs_bucket: str, tmp_path: Path
) -> None:
    """fake-gcs-server accepts the hold but does not keep it (docs/destinations.md), so
    what is checked here is that the collector asks for it, object by object; that GCS
    keeps it is shown on recorded responses of the real API
    (tests/unit/test_sinks_gcs_recorded.py)."""
    proxy = _RecordingProxy(fake_gcs.endpoint)
    try:
        config = make_config(
            tmp_path,
            f"gs://{gcs_bucket}/held",
            ports=True,
            destination={
                "retention_days": 1,
                "lock_mode": "Unlocked",
                "legal_hold": True,
                "options": {**fake_gcs.destination_options(), "endpoint": proxy.url},
            },
            delivery={"batch_max_events": 10, "max_delay_seconds": 0.1},
        )
        with sidecar_process(tmp_path, config) as sidecar:
            sidecar.start()
            _send(sidecar.http_port, EVENTS)
            assert sidecar.terminate() == 0, sidecar.tail()
    finally:
        proxy.stop()
    stored = [b.name for b in fake_gcs.client().bucket(gcs_bucket).list_blobs(prefix="held/")]
    assert any("/seg-" in name for name in stored) and any(
        name.endswith(".ckpt") for name in stored
    ), stored
    held = {
        unquote(path.split("/o/", 1)[1].split("?", 1)[0])
        for method, path, body in proxy.requests
        if method == "PATCH" and json.loads(body or b"{}").get("temporaryHold") is True
    }
    assert set(stored) <= held, sorted(set(stored) - held)
