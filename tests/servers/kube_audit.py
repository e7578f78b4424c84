"""A receiver for the test API server's audit webhook, for tests that only need to see
which audit events the API server sent (the operator's own intake is tested elsewhere).

It serves HTTPS on the control plane's reserved `audit_port` from a background thread
(standard library only), so it works from sync and async tests alike:

    def test_x(kube_audit_receiver):
        ...  # do something through the API
        event = kube_audit_receiver.wait_for(
            lambda e: e["verb"] == "get" and e["objectRef"].get("name") == "db-password")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers.arrivals import first_match
from tests.servers.kube_controlplane import KubeControlPlane

AuditEvent = dict[str, Any]


class KubeAuditReceiver:
    """Collects every audit event posted to `https://127.0.0.1:<audit_port>/audit`.

    `events` holds them in arrival order, each stamped with the batch's `apiVersion` and
    `kind: Event` (items of an EventList carry neither). `batches` counts what arrived by
    (apiVersion, kind) of the batch."""

    def __init__(self, kube: KubeControlPlane) -> None:
        self.events: list[AuditEvent] = []
        self.batches: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    batch = json.loads(self.rfile.read(length))
                    receiver._add(batch)
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per batch would drown the test output

        self._server = ThreadingHTTPServer((kube.audit_host, kube.audit_port), Handler)
        self._server.daemon_threads = True
        self._server.socket = kube.audit_ssl_context().wrap_socket(
            self._server.socket, server_side=True
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kube-audit-receiver", daemon=True
        )

    def _add(self, batch: dict[str, Any]) -> None:
        api_version, kind = str(batch["apiVersion"]), str(batch["kind"])
        with self._changed:
            self.batches[(api_version, kind)] = self.batches.get((api_version, kind), 0) + 1
            for item in batch["items"]:
                self.events.append({"apiVersion": api_version, "kind": "Event", **item})
            self._changed.notify_all()

    def start(self) -> KubeAuditReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def snapshot(self) -> list[AuditEvent]:
        with self._lock:
            return list(self.events)

    def wait_for(self, match: Callable[[AuditEvent], bool], timeout: float = 15.0) -> AuditEvent:
        """The first event for which `match` is true, waiting up to `timeout` seconds;
        AssertionError if none came (with how many events did arrive)."""
        found = first_match(self.events, self._changed, match, timeout)
        if found is None:
            raise AssertionError(
                f"no matching audit event within {timeout:.0f} s "
                f"({len(self.snapshot())} other events arrived)"
            )
        return found
