"""A real Alertmanager (Debian's `prometheus-alertmanager`, 0.25) for tests, and the
webhook receiver it routes to, inside the test process.

`Alertmanager` runs `prometheus-alertmanager` on a free 127.0.0.1 port with its own
storage folder and clustering off (`--cluster.listen-address=`). Its one route sends
every alert to `WebhookReceiver`, a small HTTP server in a thread of the test process,
with `send_resolved: true` and short timers (group_wait 100 ms, group_interval 1 s), so a
test sees within about a second what Alertmanager routed: the group's labels, each
alert's labels and annotations, and later its resolution.

Fixture: `alertmanager` (session-wide). The receiver keeps every notification of the
session, so a test matches the alerts it caused by a label unique to it (its namespace,
a uuid), never by counting:

    def test_x(alertmanager):
        alertmanager.post_alerts([{"labels": {"alertname": "X", "test": tid}}])  # API v2
        alert = alertmanager.receiver.wait_for_alert(test=tid)                  # firing
        ...
        alertmanager.receiver.wait_for_alert(status="resolved", test=tid)

`routed(group_by=[...], ...)` changes the route for one test and restores it after.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tests.servers.arrivals import first_match
from tests.servers.prom_process import PromProcess

DEFAULT_ROUTE: dict[str, Any] = {
    "group_by": ["alertname"],
    "group_wait": "100ms",
    "group_interval": "1s",
    "repeat_interval": "1h",
}


@dataclass(frozen=True)
class Notification:
    """One webhook call from Alertmanager: a group of alerts (webhook payload version 4:
    `status`, `groupLabels`, `commonLabels`, `alerts[]` with `status`, `labels`,
    `annotations`, `startsAt`, `endsAt`, `fingerprint`)."""

    payload: dict[str, Any]
    received_at: float  # time.monotonic()

    @property
    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.payload.get("alerts", [])
        return alerts

    @property
    def group_labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.payload.get("groupLabels", {})
        return labels


def labels_match(have: dict[str, str], want: dict[str, str]) -> bool:
    return all(have.get(key) == value for key, value in want.items())


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 recording each JSON body POSTed to it."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._notifications: list[Notification] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._record(Notification(payload, time.monotonic()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the notifications themselves are the record

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="alertmanager-webhook", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def _record(self, notification: Notification) -> None:
        with self._lock:
            self._notifications.append(notification)
            self._lock.notify_all()

    @property
    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def wait_for(
        self, match: Callable[[Notification], bool], timeout: float = 15.0
    ) -> Notification:
        """The first notification (of the session) that `match` accepts, waiting up to
        `timeout` seconds for it."""
        found = first_match(self._notifications, self._lock, match, timeout)
        if found is None:
            sent = self.notifications
            raise AssertionError(
                f"Alertmanager sent no matching notification within {timeout:.0f} s; "
                f"it sent {len(sent)} this session, the last: {[n.payload for n in sent[-3:]]}"
            )
        return found

    def wait_for_alert(
        self, status: str = "firing", timeout: float = 15.0, **labels: str
    ) -> dict[str, Any]:
        """The first alert Alertmanager delivered with `status` ("firing" or "resolved")
        whose labels include `labels`."""
        found: list[dict[str, Any]] = []

        def match(notification: Notification) -> bool:
            for alert in notification.alerts:
                if alert.get("status") == status and labels_match(alert["labels"], labels):
                    found.append(alert)
                    return True
            return False

        self.wait_for(match, timeout)
        return found[0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@dataclass
class Alertmanager(PromProcess):
    label: ClassVar[str] = "alertmanager"
    binary_name: ClassVar[str] = "prometheus-alertmanager"
    binary_env: ClassVar[str] = "AUDITLOCK_ALERTMANAGER"

    receiver: WebhookReceiver = field(default_factory=WebhookReceiver)
    route: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ROUTE))

    @property
    def api_url(self) -> str:
        """Base of the API v2 (`POST {api_url}/alerts`)."""
        return f"{self.url}/api/v2"

    def config(self) -> dict[str, Any]:
        return {
            "route": {"receiver": "test", **self.route},
            "receivers": [
                {
                    "name": "test",
                    "webhook_configs": [{"url": self.receiver.url, "send_resolved": True}],
                }
            ],
        }

    def own_flags(self) -> list[str]:
        return [f"--storage.path={self.workdir / 'data'}", "--cluster.listen-address="]

    @contextlib.contextmanager
    def routed(self, **route: Any) -> Iterator[Alertmanager]:
        """Use `route` settings (group_by, group_wait, group_interval, repeat_interval,
        ...) over the defaults while the block runs."""
        before = self.route
        self.route = {**before, **route}
        self.reload()
        try:
            yield self
        finally:
            self.route = before
            self.reload()

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """`POST /api/v2/alerts`, as auditlock's delivery does."""
        self.post_json("/api/v2/alerts", alerts)

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds now (`GET /api/v2/alerts`) whose labels include
        `labels`, active, silenced and inhibited alike."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in labels.items()])
        result: list[dict[str, Any]] = self.get_json(f"/api/v2/alerts?{query}")
        return result

    def close(self) -> None:
        self.stop()
        self.receiver.close()


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path_factory.mktemp("alertmanager"))
    try:
        server.start()
        yield server
    finally:
        server.close()
