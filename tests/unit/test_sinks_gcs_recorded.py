"""gs:// behaviour fake-gcs-server cannot show, driven through the real client library.

A tiny HTTP server on 127.0.0.1 replays GCS JSON API responses (tests/unit/gcs_responses/,
see its README for where they come from) to the official google-cloud-storage client, and
records the requests it made. Covered here: a locked bucket's configuration read and
judged, bucket-level retention reported per object, the hold flag, the 403 GCS returns
for deleting a retained object, retries of 429/503, and permanent 401/403/400 errors.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from google.api_core.exceptions import Forbidden

from auditlock import sinks
from auditlock.sinks import (
    DestinationError,
    LockMode,
    ObjectConflict,
    RetentionSpec,
    TransientError,
)
from auditlock.sinks.gcs import GCSDestination
from auditlock.sinks.retry import RetryPolicy

RESPONSES = Path(__file__).parent / "gcs_responses"
BUCKET = "audit-trail-prod"
ONE_YEAR = RetentionSpec(period=timedelta(days=365), mode=LockMode.LOCKED)


def body(name: str) -> bytes:
    return (RESPONSES / name).read_bytes()


@dataclass
class Route:
    method: str
    path: str  # exact, unquoted
    replies: list[tuple[int, bytes, dict[str, str]]]


@dataclass
class Replay:
    """Answers requests from a script of routes; records (method, path, query, body)."""

    routes: list[Route] = field(default_factory=list)
    seen: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    endpoint: str = ""

    def on(
        self,
        method: str,
        path: str,
        *replies: tuple[int, bytes] | tuple[int, bytes, dict[str, str]],
    ) -> None:
        full = [(r[0], r[1], r[2] if len(r) > 2 else {}) for r in replies]  # type: ignore[misc]
        self.routes.append(Route(method, path, full))

    def answer(
        self, method: str, raw_path: str, payload: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        self.seen.append((method, path, parts.query, payload))
        for route in self.routes:
            if route.method == method and route.path == path:
                return route.replies.pop(0) if len(route.replies) > 1 else route.replies[0]
        return 404, b'{"error": {"code": 404, "message": "No such object: replay"}}', {}


@pytest.fixture
def replay() -> Iterator[Replay]:
    script = Replay()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = self.rfile.read(length) if length else b""
            status, data, headers = script.answer(self.command, self.path, payload)
            self.send_response(status)
            self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    script.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def open_dest(replay: Replay, **extra: Any) -> GCSDestination:
    fast = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02, deadline=10)
    options: dict[str, Any] = {"endpoint": replay.endpoint, "anonymous": True, "retry": fast}
    dest = sinks.open(f"gs://{BUCKET}/trail", **(options | extra))
    assert isinstance(dest, GCSDestination)
    return dest


BUCKET_PATH = f"/storage/v1/b/{BUCKET}"
UPLOAD_PATH = f"/upload/storage/v1/b/{BUCKET}/o"
OBJECT_PATH = f"/storage/v1/b/{BUCKET}/o/trail/streams/a/seg-1"
PERMS = f"/storage/v1/b/{BUCKET}/iam/testPermissions"
ALL_PERMS = json.dumps(
    {
        "kind": "storage#testIamPermissionsResponse",
        "permissions": ["storage.objects.create", "storage.objects.get", "storage.objects.list"],
    }
).encode()


def test_check_judges_a_locked_bucket_and_reports_every_fact(replay: Replay) -> None:
    replay.on("GET", BUCKET_PATH, (200, body("bucket_locked.json")))
    replay.on("GET", PERMS, (200, ALL_PERMS))
    report = open_dest(replay).check(ONE_YEAR)
    assert report.ok and report.worm, report.summary()
    assert report.facts["retention_policy"] == {"period_days": 365.0, "locked": True}
    assert report.facts["object_retention_enabled"] is True
    assert report.facts["versioning"] is False
    assert report.facts["default_event_based_hold"] is True
    assert report.facts["cmek"].endswith("cryptoKeys/trail")
    assert report.facts["writable"] is True
    assert any("event-based hold" in n for n in report.notices)
    assert any("customer-managed key" in n for n in report.notices)


def test_check_fails_a_bucket_without_locks_with_every_reason(replay: Replay) -> None:
    replay.on("GET", BUCKET_PATH, (200, body("bucket_plain.json")))
    missing = json.dumps({"permissions": ["storage.objects.get"]}).encode()
    replay.on("GET", PERMS, (200, missing))
    report = open_dest(replay).check(RetentionSpec(timedelta(days=30)))
    assert not report.ok and not report.worm
    text = report.summary()
    assert "Object Retention is not enabled" in text
    assert "storage.objects.create" in text and "storage.objects.list" in text
    assert any("not locked" in n for n in report.notices)
    assert any("shorter than the required 30 days" in n for n in report.notices)


def test_check_of_missing_bucket(replay: Replay) -> None:
    replay.on(
        "GET",
        BUCKET_PATH,
        (404, b'{"error": {"code": 404, "message": "The specified bucket does not exist."}}'),
    )
    report = open_dest(replay).check(ONE_YEAR)
    assert not report.ok and "does not exist" in report.summary()


def test_put_sends_retention_md5_create_only_precondition_then_hold(replay: Replay) -> None:
    replay.on("POST", UPLOAD_PATH, (200, body("object_retained.json")))
    replay.on("PATCH", OBJECT_PATH, (200, body("object_retained.json")))
    before = datetime.now(UTC).replace(microsecond=0)
    spec = RetentionSpec(timedelta(days=365), LockMode.LOCKED, legal_hold=True)
    result = open_dest(replay).put("streams/a/seg-1", b"segment", spec)
    assert result.created
    [(query, payload)] = [(q, b) for m, _, q, b in replay.seen if m == "POST"]
    assert "ifGenerationMatch=0" in query
    metadata = json.loads(payload.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
    assert metadata["name"] == "trail/streams/a/seg-1"
    assert metadata["retention"]["mode"] == "Locked"
    until = datetime.fromisoformat(metadata["retention"]["retainUntilTime"].replace("Z", "+00:00"))
    assert (
        before + timedelta(days=365) <= until <= datetime.now(UTC) + timedelta(days=365, seconds=1)
    )
    assert metadata["md5Hash"] == "/dMrkGFoHttSxVS9m78HEg=="
    # The hold cannot ride on the upload (the API ignores it there): a patch follows.
    [patch] = [b for m, _, _, b in replay.seen if m == "PATCH"]
    assert json.loads(patch) == {"temporaryHold": True}


def test_retention_reports_object_lock_and_hold(replay: Replay) -> None:
    replay.on("GET", OBJECT_PATH, (200, body("object_retained.json")))
    r = open_dest(replay).retention("streams/a/seg-1")
    assert r.mode is LockMode.LOCKED and r.legal_hold
    assert r.retain_until == datetime(2031, 3, 11, 9, 30, tzinfo=UTC)


def test_retention_from_a_locked_bucket_policy_alone(replay: Replay) -> None:
    replay.on(
        "GET", f"/storage/v1/b/{BUCKET}/o/trail/old", (200, body("object_bucket_policy_only.json"))
    )
    replay.on("GET", BUCKET_PATH, (200, body("bucket_locked.json")))
    r = open_dest(replay).retention("old")
    assert r.mode is LockMode.LOCKED
    assert r.retain_until == datetime(2025, 3, 11, 9, 30, tzinfo=UTC)


def test_deleting_a_retained_object_is_refused_by_gcs(replay: Replay) -> None:
    """What real GCS answers (and fake-gcs-server does not): 403 with the retain-until."""
    replay.on("DELETE", OBJECT_PATH, (403, body("error_403_retained.json")))
    client = open_dest(replay).client
    with pytest.raises(Forbidden, match="subject to object retention"):
        client.bucket(BUCKET).blob("trail/streams/a/seg-1").delete(retry=None)


def test_overwrite_refused_by_gcs_is_a_clear_permanent_error(replay: Replay) -> None:
    replay.on("POST", UPLOAD_PATH, (403, body("error_403_retained.json")))
    with pytest.raises(
        DestinationError, match=r"access denied.*subject to object retention"
    ) as err:
        open_dest(replay).put("streams/a/seg-1", b"other", ONE_YEAR)
    assert not isinstance(err.value, TransientError)
    assert sum(1 for s in replay.seen if s[0] == "POST") == 1  # 403 is never retried


def _existing_segment(replay: Replay) -> None:
    """streams/a/seg-1 exists (the create-only upload gets 412) and holds b"segment"."""
    replay.on("POST", UPLOAD_PATH, (412, body("error_412.json")))
    media = {
        "x-goog-hash": "md5=/dMrkGFoHttSxVS9m78HEg==",
        "Content-Type": "application/octet-stream",
    }
    replay.on(
        "GET", f"/download/storage/v1/b/{BUCKET}/o/trail/streams/a/seg-1", (200, b"segment", media)
    )


def test_existing_name_with_same_bytes_is_idempotent(replay: Replay) -> None:
    _existing_segment(replay)
    replay.on("GET", OBJECT_PATH, (200, body("object_retained.json")))
    result = open_dest(replay).put("streams/a/seg-1", b"segment", ONE_YEAR)
    assert not result.created
    assert result.retention is not None and result.retention.mode is LockMode.LOCKED


def test_existing_name_with_other_bytes_is_a_conflict(replay: Replay) -> None:
    _existing_segment(replay)
    with pytest.raises(ObjectConflict):
        open_dest(replay).put("streams/a/seg-1", b"tampered", ONE_YEAR)


def test_throttling_and_server_errors_are_retried(replay: Replay) -> None:
    replay.on(
        "POST",
        UPLOAD_PATH,
        (429, body("error_429.json")),
        (503, body("error_503.json")),
        (200, body("object_retained.json")),
    )
    assert open_dest(replay).put("streams/a/seg-1", b"segment", ONE_YEAR).created
    assert sum(1 for s in replay.seen if s[0] == "POST") == 3


def test_persistent_server_errors_end_in_a_transient_error(replay: Replay) -> None:
    replay.on("POST", UPLOAD_PATH, (503, body("error_503.json")))
    with pytest.raises(TransientError, match="failed 4 time"):
        open_dest(replay).put("streams/a/seg-1", b"segment", ONE_YEAR)


def test_rejected_credentials_are_a_clear_error_not_retried(replay: Replay) -> None:
    """On 401 the client tries to refresh its token; anonymous ones cannot be refreshed."""
    replay.on("POST", UPLOAD_PATH, (401, body("error_401.json")))
    with pytest.raises(DestinationError, match="credentials were rejected") as err:
        open_dest(replay).put("streams/a/seg-1", b"segment", ONE_YEAR)
    assert not isinstance(err.value, TransientError)
    assert sum(1 for s in replay.seen if s[0] == "POST") == 1


def test_bucket_without_object_retention_is_diagnosed_on_put(replay: Replay) -> None:
    replay.on("POST", UPLOAD_PATH, (400, body("error_400_no_object_retention.json")))
    replay.on("GET", BUCKET_PATH, (200, body("bucket_plain.json")))
    with pytest.raises(DestinationError, match="Object Retention is not enabled"):
        open_dest(replay).put("streams/a/seg-1", b"segment", ONE_YEAR)


def test_retention_prefers_the_object_lock_over_a_later_unlocked_bucket_policy(
    replay: Replay,
) -> None:
    obj = json.loads(body("object_retained.json"))  # Locked until 2031
    obj["retentionExpirationTime"] = "2035-01-01T00:00:00Z"  # bucket policy, unlocked
    replay.on("GET", OBJECT_PATH, (200, json.dumps(obj).encode()))
    replay.on("GET", BUCKET_PATH, (200, body("bucket_plain.json")))
    r = open_dest(replay).retention("streams/a/seg-1")
    assert r.mode is LockMode.LOCKED
    assert r.retain_until == datetime(2031, 3, 11, 9, 30, tzinfo=UTC)


def test_retention_takes_a_later_locked_bucket_policy(replay: Replay) -> None:
    obj = json.loads(body("object_retained.json"))
    obj["retention"] = {"mode": "Unlocked", "retainUntilTime": "2026-01-01T00:00:00Z"}
    replay.on("GET", OBJECT_PATH, (200, json.dumps(obj).encode()))
    replay.on("GET", BUCKET_PATH, (200, body("bucket_locked.json")))
    r = open_dest(replay).retention("streams/a/seg-1")
    assert r.mode is LockMode.LOCKED
    assert r.retain_until == datetime(2025, 3, 11, 9, 30, 0, 123000, tzinfo=UTC)
