"""Cluster-level capture: API server audit events and watched changes, handed to the
operator's own collector and acknowledged only once the collector has them on disk.

One pipeline, used twice (docs/architecture.md, "The event's path"): the collector next
to the operator spools, chains, signs and ships these events exactly like an app pod's
collector does. The operator holds no queue of its own. An audit batch goes to the
collector's HTTP intake (`POST /v1/events`, docs/sidecar.md) while the API server waits
for the webhook's answer; the collector answers 202 only after fsync, and only then does
the webhook answer 200. Anything else (spool full, collector down or slow) becomes an
error answer, so the batch stays with the API server, whose audit backend retries it.

The batch carries an `Idempotency-Key` derived from its audit IDs: a batch the API
server sends again (its answer was lost when the operator was killed) is recognised by
the collector and stored once (docs/architecture.md, "Sources the operator owns").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter

from auditlock.operator.audit_events import from_audit_event, from_watch_event
from auditlock.operator.kube import Kube
from auditlock.operator.registry import PolicyRegistry
from auditlock.operator.secret_hashes import SecretObserver

log = logging.getLogger("auditlock.operator.capture")

DEFAULT_COLLECTOR = "127.0.0.1:8686"
# The collector records the intake tag in details.intake; tags under this prefix are the
# operator's on its own collector (sources.forward.observer_tag_prefix), so its events
# may carry the marks an app's may not (details.observed_by, k8s-audit- ids).
TAG_PREFIX = "auditlock.operator"
# The API server's audit webhook gives up on a request it has waited for long enough;
# an answer has to come before that, and a collector this slow is pushed back on.
COLLECTOR_TIMEOUT_SECONDS = 5.0
# The Retry-After of a pushed-back batch. The API server's client waits this long before
# each of its up to 10 resends within each of its 5 backoff steps, so it sets how long a
# batch is held (about 55 times this) before the API server gives up on it.
RETRY_AFTER_SECONDS = 1
WATCH_RETRY_MAX_SECONDS = 10.0
# How long a namespace stays in scope after its last policy with a capture source is
# gone. The API server sends an audit batch up to its batch wait after the request and
# retries it for about a minute; a request made while the policy still stood (the very
# one before `kubectl delete auditpolicy`, say) must not fall out of the trail because
# its batch arrived after the delete.
SCOPE_LINGER_SECONDS = 120.0


@dataclass(frozen=True)
class AuditAnswer:
    """What the /audit route tells the API server: HTTP status and a message."""

    status: int
    accepted: int = 0
    error: str = ""
    retry_after: int | None = None


class CollectorRefused(Exception):
    """The collector did not store a batch; `reason` labels the pushback metric."""

    def __init__(self, reason: str, status: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def batch_key(items: list[dict[str, Any]]) -> str:
    """The Idempotency-Key of an audit batch: a digest of its (auditID, stage) pairs, so
    the same batch sent again gets the same key whatever the operator's state is now.
    An item without an auditID (only a hostile sender makes one) counts by its content."""
    digest = hashlib.blake2b(digest_size=16)
    for item in items:
        audit_id, stage = item.get("auditID"), item.get("stage")
        if isinstance(audit_id, str) and audit_id:
            digest.update(f"{audit_id}\x00{stage}\x01".encode("utf-8", "surrogatepass"))
        else:
            digest.update(orjson.dumps(item, option=orjson.OPT_SORT_KEYS) + b"\x01")
    return f"k8s-audit-batch-{digest.hexdigest()}"


class ClusterCapture:
    def __init__(
        self,
        registry: PolicyRegistry,
        kube: Kube | None,
        *,
        cluster: str = "",
        collector: str = DEFAULT_COLLECTOR,
        metrics: CollectorRegistry | None = None,
        timeout: float = COLLECTOR_TIMEOUT_SECONDS,
        secret_key: bytes | None = None,
        retry_after_seconds: int = RETRY_AFTER_SECONDS,
    ) -> None:
        self.registry = registry
        self.retry_after_seconds = retry_after_seconds
        self.kube = kube
        self.cluster = cluster
        self.secret_key = secret_key
        host, _, port = collector.rpartition(":")
        self.url = f"http://{host or '127.0.0.1'}:{int(port)}/v1/events"
        self.timeout = timeout
        self.metrics = metrics or CollectorRegistry()
        self.events = Counter(
            "auditlock_operator_capture_events",
            "Cluster-level events by outcome (stored, ignored, rejected, duplicate).",
            ["outcome"],
            registry=self.metrics,
        )
        self.pushback = Counter(
            "auditlock_operator_capture_pushback",
            "Batches the collector did not store, answered with an error so that the API "
            "server (or the watch handler) retries, by reason (spool_full, "
            "collector_unreachable, collector_timeout, collector_error, too_large).",
            ["reason"],
            registry=self.metrics,
        )
        self.secrets = SecretObserver(kube, secret_key, metrics=self.metrics)
        self._session: aiohttp.ClientSession | None = None
        self._closed = asyncio.Event()
        # Told the events of every batch once they are durable (alert evaluation,
        # operator/alerting.py); called on the event loop, must not block.
        self.observers: list[Callable[[list[dict[str, Any]]], None]] = []
        # Per capture source: namespace -> when (monotonic) it was last in scope.
        self._in_scope_at: dict[str, dict[str, float]] = {}

    def _tell(self, events: list[dict[str, Any]]) -> None:
        for observer in self.observers:
            try:
                observer(events)
            except Exception:
                log.exception("capture observer failed (the events are stored)")

    # -- scope --------------------------------------------------------------------------

    def _namespaces(self, attribute: str) -> set[str]:
        """The namespaces whose events `attribute` (a cluster capture source) records:
        those a policy enables it in now, and for SCOPE_LINGER_SECONDS those it did."""
        now = time.monotonic()
        seen = self._in_scope_at.setdefault(attribute, {})
        for namespace in self.registry.namespaces():
            policies = self.registry.in_namespace(namespace)
            if any(getattr(p.spec.sources.cluster, attribute) for p in policies):
                seen[namespace] = now
        for namespace in [ns for ns, at in seen.items() if now - at > SCOPE_LINGER_SECONDS]:
            del seen[namespace]
        return set(seen)

    def _stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("details", {})["cluster"] = self.cluster
        return event

    # -- the API server's audit webhook -------------------------------------------------

    async def audit_sink(self, items: list[dict[str, Any]]) -> AuditAnswer:
        """Called by the /audit route with one EventList's items; answers once the
        in-scope events are durable in the collector's spool, or with the reason not."""
        namespaces = self._namespaces("audit_webhook")
        events = []
        for raw in items:
            event = from_audit_event(raw, namespaces)
            if event is not None:
                events.append(self._stamp(event))
        self.events.labels("ignored").inc(len(items) - len(events))
        if not events:
            return AuditAnswer(200)
        await self.secrets.annotate(events)
        try:
            stored = await self._store(events, batch_key(items), "audit")
        except CollectorRefused as exc:
            self.pushback.labels(exc.reason).inc()
            log.warning("audit batch of %d event(s) not stored, answered %d: %s", len(events),
                        exc.status, exc)  # fmt: skip
            retry = self.retry_after_seconds if exc.status in (429, 503) else None
            return AuditAnswer(exc.status, error=str(exc), retry_after=retry)
        if stored:  # 0: a batch sent again (already stored and told) or all refused
            self._tell(events)
        return AuditAnswer(200, accepted=stored)

    # -- the watch fallback -------------------------------------------------------------

    async def watch_event(self, kind: str, event_type: str, body: dict[str, Any]) -> bool:
        """Store one watched change, retrying until the collector has it (the watch has
        no one to push back to); False when it is out of scope."""
        namespace = (body.get("metadata") or {}).get("namespace")
        if namespace not in self._namespaces("watch"):
            return False
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        event = from_watch_event(kind, event_type, body, now, self.secret_key)
        if event is None:
            return False
        key = f"k8s-watch-{event.get('id') or hashlib.sha256(orjson.dumps(event)).hexdigest()}"
        delay = 0.2
        while not self._closed.is_set():
            try:
                await self._store([self._stamp(event)], key, "watch")
                self._tell([event])
                return True
            except CollectorRefused as exc:
                self.pushback.labels(exc.reason).inc()
                log.warning("watched change not stored yet (%s); retrying in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)
            delay = min(delay * 2, WATCH_RETRY_MAX_SECONDS)
        return False

    # -- the collector ------------------------------------------------------------------

    async def _post(
        self, events: list[dict[str, Any]], key: str, channel: str
    ) -> tuple[int, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(
                self.url,
                data=orjson.dumps(events),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": key,
                    "X-Auditlock-Tag": f"{TAG_PREFIX}.{channel}",
                },
            ) as response:
                body = await response.read()
                try:
                    answer = orjson.loads(body) if body else {}
                except orjson.JSONDecodeError:
                    answer = {}
                return response.status, answer if isinstance(answer, dict) else {}
        except TimeoutError:
            raise CollectorRefused(
                "collector_timeout", 503,
                f"collector at {self.url} did not answer within {self.timeout:g} s",
            ) from None  # fmt: skip
        except aiohttp.ClientError as exc:
            raise CollectorRefused(
                "collector_unreachable", 503, f"collector at {self.url} unreachable: {exc}"
            ) from None

    async def _store(self, events: list[dict[str, Any]], key: str, channel: str) -> int:
        """Events durable in the collector's spool; how many it stored. Events the
        collector refuses as invalid (a 400 names them) are counted, logged and left
        out, and the rest is sent again under the same key: nothing was stored."""
        while True:
            status, answer = await self._post(events, key, channel)
            if status == 202:
                if answer.get("duplicate"):
                    self.events.labels("duplicate").inc(len(events))
                    return 0
                self.events.labels("stored").inc(len(events))
                return int(answer.get("accepted") or 0)
            error = str(answer.get("error") or f"HTTP {status}")
            if status == 503:
                raise CollectorRefused("spool_full", 503, f"collector pushes back: {error}")
            if status == 413:
                raise CollectorRefused("too_large", 413, f"collector refused the batch: {error}")
            bad = {
                e.get("index")
                for e in answer.get("errors") or []
                if isinstance(e, dict) and isinstance(e.get("index"), int)
            }
            if status != 400 or not bad:
                raise CollectorRefused("collector_error", 503, f"collector answered {error}")
            self.events.labels("rejected").inc(len(bad))
            log.error("collector refused %d mapped event(s): %s", len(bad), error)
            events = [e for i, e in enumerate(events) if i not in bad]
            if not events:
                return 0

    async def store_alert_events(self, events: list[dict[str, Any]]) -> None:
        """Store alert events (alerts/receivers/trail.py) in the operator's stream; the
        key makes a retried batch stored once. Raises CollectorRefused (retried by the
        alert dispatcher)."""
        digest = hashlib.blake2b(orjson.dumps(events), digest_size=16).hexdigest()
        await self._store([self._stamp(e) for e in events], f"auditlock-alerts-{digest}", "alerts")

    async def store_witness_events(self, events: list[dict[str, Any]]) -> None:
        """Store the witness's `witness.recorded` events (operator/witness.py) in the
        operator's stream; the key makes a retried batch stored once. Raises
        CollectorRefused."""
        digest = hashlib.blake2b(orjson.dumps(events), digest_size=16).hexdigest()
        stamped = [self._stamp(e) for e in events]
        await self._store(stamped, f"auditlock-witness-{digest}", "witness")

    async def close(self) -> None:
        self._closed.set()
        if self._session is not None:
            await self._session.close()
            self._session = None
