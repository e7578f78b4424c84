"""Cluster-level capture: API server audit events and watched changes, for namespaces
under a policy, sent with `fluent-logger` to the operator's own collector sidecar.

One pipeline, used twice (docs/architecture.md, "The event's path"): the collector next
to the operator spools, chains, signs and ships these events exactly like an app pod's
collector does. Sending happens in one background thread (fluent-logger blocks); the
webhook answers the API server as soon as the events are queued. A collector that is
down is retried with backoff; the queue is bounded and what overflows is counted, never
silently dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from auditlock.operator.audit_events import from_audit_event, from_watch_event
from auditlock.operator.kube import Kube
from auditlock.operator.registry import PolicyRegistry

log = logging.getLogger("auditlock.operator.capture")

TAG_PREFIX = "auditlock.operator"
QUEUE_LIMIT = 100_000


class ClusterCapture:
    def __init__(
        self,
        registry: PolicyRegistry,
        kube: Kube | None,
        *,
        cluster: str = "",
        collector_host: str = "127.0.0.1",
        collector_port: int = 24224,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry
        self.kube = kube
        self.cluster = cluster
        self.host = collector_host
        self.port = collector_port
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(QUEUE_LIMIT)
        self.metrics = metrics or CollectorRegistry()
        self.events = Counter(
            "auditlock_operator_capture_events",
            "Cluster-level events by outcome (queued, sent, ignored, overflow, send_retry).",
            ["outcome"],
            registry=self.metrics,
        )
        self.sent = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._send_loop, name="auditlock-capture", daemon=True
        )
        self._thread.start()

    # -- intake -----------------------------------------------------------------------

    def _namespaces(self, attribute: str) -> set[str]:
        return {
            ns
            for ns in self.registry.namespaces()
            if any(
                getattr(p.spec.sources.cluster, attribute) for p in self.registry.in_namespace(ns)
            )
        }

    def audit_sink(self, events: list[dict[str, Any]]) -> int:
        """Called by the /audit route with one EventList's items; returns how many were
        in scope and queued."""
        namespaces = self._namespaces("audit_webhook")
        accepted = 0
        for raw in events:
            event = from_audit_event(raw, namespaces) if namespaces else None
            if event is None:
                continue
            self._enqueue(event, "audit")
            accepted += 1
        self.events.labels("ignored").inc(len(events) - accepted)
        return accepted

    def watch_event(self, kind: str, event_type: str, body: dict[str, Any]) -> bool:
        namespace = (body.get("metadata") or {}).get("namespace")
        if namespace not in self._namespaces("watch"):
            return False
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        event = from_watch_event(kind, event_type, body, now)
        if event is None:
            return False
        self._enqueue(event, "watch")
        return True

    def _enqueue(self, event: dict[str, Any], channel: str) -> None:
        event.setdefault("details", {})["cluster"] = self.cluster
        tag = f"{channel}.{event['category']}"
        try:
            self._queue.put_nowait((tag, event))
        except queue.Full:
            self.events.labels("overflow").inc()
            log.error("capture queue full (%d): collector unreachable? event dropped", QUEUE_LIMIT)
            return
        self.events.labels("queued").inc()

    # -- sending ------------------------------------------------------------------------

    def _send_loop(self) -> None:
        from fluent import sender

        fluent = sender.FluentSender(TAG_PREFIX, host=self.host, port=self.port, timeout=5.0)
        delay = 0.2
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                tag, event = item
                while not fluent.emit_with_time(tag, time.time(), event):
                    # We still hold the event: drop fluent-logger's buffered copy so the
                    # retry below sends it once, not twice.
                    error = fluent.last_error
                    fluent.clear_last_error()
                    fluent.pendings = None
                    self.events.labels("send_retry").inc()
                    log.warning("collector %s:%d not reachable (%s); retrying", self.host,
                                self.port, error)  # fmt: skip
                    if self._closed.wait(delay):
                        return
                    delay = min(delay * 2, 10.0)
                delay = 0.2
                self.sent += 1
                self.events.labels("sent").inc()
        finally:
            fluent.close()

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)
