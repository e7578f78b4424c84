"""The operator's HTTPS server: admission webhooks, the API server's audit webhook intake,
health and metrics.

Routes (every listener serves all of them; see docs/operator.md):

    POST /mutate-pods     Pod CREATE -> inject the collector       (MutatingWebhookConfiguration)
    POST /validate-pods   Pod CREATE -> enforce `required`         (ValidatingWebhookConfiguration)
    POST /audit           audit.k8s.io/v1 EventList from the API server's audit webhook
    GET  /healthz         the process is alive
    GET  /readyz          the policy registry has been loaded (webhooks answer correctly)
    GET  /metrics         Prometheus text format

Admission answers come from the in-memory registry, never from the API server, so the
p99 stays in single-digit milliseconds.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from auditlock.operator import admission
from auditlock.operator.injection import InjectionSettings
from auditlock.operator.registry import PolicyRegistry

log = logging.getLogger("auditlock.operator.webhooks")

MAX_BODY = 16 * 1024 * 1024  # an AdmissionReview of a large pod; audit batches of 100 events

AuditSink = Callable[[list[dict[str, Any]]], int]  # returns how many events were accepted


@dataclass
class Listener:
    host: str
    port: int
    # None makes a plain-HTTP listener that serves only /healthz, /readyz and /metrics
    # (kubelet probes, Prometheus); the webhooks and /audit are served over TLS only.
    ssl_context: ssl.SSLContext | None


@dataclass
class WebhookServer:
    registry: PolicyRegistry
    injection: InjectionSettings
    listeners: list[Listener]
    audit_sink: AuditSink | None = None
    audit_token: str | None = None  # when set, /audit needs `Authorization: Bearer <token>`
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    _runners: list[web.AppRunner] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._admission = Counter(
            "auditlock_operator_admission_requests",
            "Admission requests answered, by webhook and outcome.",
            ["webhook", "outcome"],
            registry=self.metrics,
        )
        self._audit = Counter(
            "auditlock_operator_audit_webhook_events",
            "API server audit events received, by outcome.",
            ["outcome"],
            registry=self.metrics,
        )
        self.stats = admission.AdmissionStats(
            on_count=lambda hook, outcome: self._admission.labels(hook, outcome).inc()
        )
        self.bound_ports: list[int] = []

    def app(self, *, webhooks: bool = True) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        if webhooks:
            app.router.add_post("/mutate-pods", self._mutate)
            app.router.add_post("/validate-pods", self._validate)
            app.router.add_post("/audit", self._audit_intake)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        tls_runner = web.AppRunner(self.app(webhooks=True), access_log=None)
        plain_runner = web.AppRunner(self.app(webhooks=False), access_log=None)
        for runner in (tls_runner, plain_runner):
            await runner.setup()
            self._runners.append(runner)
        for listener in self.listeners:
            runner = tls_runner if listener.ssl_context is not None else plain_runner
            site = web.TCPSite(
                runner, listener.host, listener.port, ssl_context=listener.ssl_context
            )
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.bound_ports.append(sockets[0].getsockname()[1] if sockets else listener.port)
        log.info("webhook server listening on ports %s", self.bound_ports)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _answer(self, request: web.Request, webhook: str) -> web.Response:
        body = await request.read()
        try:
            if webhook == "mutate":
                review = admission.mutate(body, self.registry, self.injection, self.stats)
            else:
                review = admission.validate(body, self.registry, self.stats)
        except Exception:
            # A bug must not become a 500: fail open/closed like an unparseable request.
            log.exception("%s webhook failed on a request; answering by enforcement", webhook)
            review = admission.internal_error_answer(webhook, body, self.registry)
            self.stats.count(webhook, "internal-error")
        return web.Response(body=orjson.dumps(review), content_type="application/json")

    async def _mutate(self, request: web.Request) -> web.Response:
        return await self._answer(request, "mutate")

    async def _validate(self, request: web.Request) -> web.Response:
        return await self._answer(request, "validate")

    async def _audit_intake(self, request: web.Request) -> web.Response:
        if self.audit_token is not None:
            supplied = request.headers.get("Authorization", "")
            if not hmac.compare_digest(supplied, f"Bearer {self.audit_token}"):
                self._audit.labels(outcome="unauthorized").inc()
                return web.json_response({"error": "audit intake needs a bearer token"}, status=401)
        try:
            payload = json.loads(await request.read())
            items = payload.get("items") if isinstance(payload, dict) else None
            if not isinstance(items, list):
                raise ValueError("not an audit.k8s.io EventList")
        except ValueError as exc:
            self._audit.labels(outcome="unparseable").inc()
            log.warning("audit webhook body refused: %s", exc)
            return web.json_response({"error": f"expected an EventList: {exc}"}, status=400)
        events = [e for e in items if isinstance(e, dict)]
        accepted = self.audit_sink(events) if self.audit_sink is not None else 0
        self._audit.labels(outcome="accepted").inc(accepted)
        self._audit.labels(outcome="ignored").inc(len(items) - accepted)
        return web.json_response({"accepted": accepted})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.registry.synced:
            return web.Response(status=503, text="policies not loaded yet")
        return web.Response(text="ready")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics), content_type="text/plain")
