"""The operator's HTTPS server: admission webhooks, the API server's audit webhook intake,
health and metrics.

Routes (every listener serves all of them; see docs/operator.md):

    POST /mutate-pods     Pod CREATE -> inject the collector       (MutatingWebhookConfiguration)
    POST /validate-pods   Pod CREATE -> enforce `required`         (ValidatingWebhookConfiguration)
    POST /audit           audit.k8s.io/v1 EventList from the API server's audit webhook
    POST /v1/certificates a collector's public key + pod-bound token -> certificate
                          (operator/certificates.py; only with a root key)
    GET  /healthz         the process is alive
    GET  /readyz          the policy registry has been loaded (webhooks answer correctly)
    GET  /metrics         Prometheus text format

Admission answers come from the in-memory registry, never from the API server, so the
p99 stays in single-digit milliseconds.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from auditlock.operator import admission, alert_rules
from auditlock.operator.capture import AuditAnswer
from auditlock.operator.certificates import MAX_REQUEST_BYTES as MAX_CERTIFICATE_REQUEST
from auditlock.operator.certificates import PATH as CERTIFICATES_PATH
from auditlock.operator.certificates import CertificateIssuer, Refused
from auditlock.operator.injection import InjectionSettings
from auditlock.operator.registry import PolicyRegistry
from auditlock.operator.webhook_config import VALIDATE_RULES_PATH

log = logging.getLogger("auditlock.operator.webhooks")

MAX_BODY = 16 * 1024 * 1024  # an AdmissionReview of a large pod; audit batches of 100 events

# Stores one EventList's items and says what to answer: 200 only once they are durable.
AuditSink = Callable[[list[dict[str, Any]]], Awaitable[AuditAnswer]]


class BodyRefused(Exception):
    """A request body that could not be read: too large, or malformed framing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: web.Request, seconds: float) -> bytes:
    """The whole body, or BodyRefused(413 / 408 / 400) with a message for the client."""
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyRefused(413, f"request body is larger than {MAX_BODY} bytes") from None
    except TimeoutError:
        # Also what ends a body whose chunked framing broke after the handler started
        # reading: aiohttp's parser then drops the payload without failing it.
        raise BodyRefused(408, f"request body not received within {seconds:g} s") from None
    except (HttpProcessingError, ClientPayloadError, ConnectionError) as exc:
        raise BodyRefused(400, f"malformed request body: {exc.__class__.__name__}") from None


def parse_event_list(body: bytes) -> list[Any]:
    """The items of an `audit.k8s.io/v1` EventList; ValueError says what was wrong.

    orjson refuses nesting deeper than 1024 levels with a JSONDecodeError (a ValueError),
    where the standard library would raise RecursionError on 100,000-deep input."""
    payload = orjson.loads(body)
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise ValueError("not an audit.k8s.io EventList (no items list)")
    return items


class _QuietMalformedHttp(logging.Filter):
    """aiohttp logs a traceback at ERROR for every malformed request it answers 400; a
    client's bad framing is not an operator error. Log one WARNING line and count it."""

    def __init__(self, on_malformed: Callable[[], None]) -> None:
        super().__init__()
        self._on_malformed = on_malformed

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self._on_malformed()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{record.msg}: {exc.__class__.__name__} (answered {exc.code})"
            record.exc_info, record.exc_text = None, None
        return True


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
    certificates: CertificateIssuer | None = None  # None: per-pod keys are not certified
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    # The API server sends a whole AdmissionReview or EventList at once; a body that
    # trickles in for longer is refused (408) rather than holding a handler open.
    body_timeout: float = 10.0
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
        self._malformed = Counter(
            "auditlock_operator_http_malformed_requests",
            "Requests refused by the HTTP parser (bad framing, oversize lines), answered 400.",
            registry=self.metrics,
        )
        self._refused = Counter(
            "auditlock_operator_http_refused_bodies",
            "Request bodies refused before parsing, by path and HTTP status.",
            ["path", "status"],
            registry=self.metrics,
        )
        self._certificates = Counter(
            "auditlock_operator_certificate_requests",
            "Certificate requests from collectors, by outcome (docs/operator.md).",
            ["outcome"],
            registry=self.metrics,
        )
        self._certificate_seconds = Histogram(
            "auditlock_operator_certificate_seconds",
            "Time to answer a certificate request that was issued.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.metrics,
        )
        # One logger per server, so its filter and counter are this server's.
        self._http_log = logging.getLogger(f"auditlock.operator.http.{id(self):x}")
        self._http_log.addFilter(_QuietMalformedHttp(self._malformed.inc))
        self.bound_ports: list[int] = []

    def app(self, *, webhooks: bool = True) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        if webhooks:
            app.router.add_post("/mutate-pods", self._mutate)
            app.router.add_post("/validate-pods", self._validate)
            app.router.add_post(VALIDATE_RULES_PATH, self._validate_rule)
            app.router.add_post("/audit", self._audit_intake)
            if self.certificates is not None:
                app.router.add_post(CERTIFICATES_PATH, self._certify)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        tls_runner = web.AppRunner(self.app(webhooks=True), access_log=None, logger=self._http_log)
        plain_runner = web.AppRunner(
            self.app(webhooks=False), access_log=None, logger=self._http_log
        )
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

    def _refuse(self, request: web.Request, refused: BodyRefused) -> web.Response:
        self._refused.labels(request.path, str(refused.status)).inc()
        log.warning("%s: %s", request.path, refused)
        return web.json_response({"error": str(refused)}, status=refused.status)

    async def _answer(self, request: web.Request, webhook: str) -> web.Response:
        try:
            body = await read_body(request, self.body_timeout)
        except BodyRefused as refused:
            return self._refuse(request, refused)
        try:
            if webhook == "mutate":
                review = admission.mutate(body, self.registry, self.injection, self.stats)
            else:
                review = admission.validate(body, self.registry, self.injection, self.stats)
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

    async def _validate_rule(self, request: web.Request) -> web.Response:
        try:
            body = await read_body(request, self.body_timeout)
        except BodyRefused as refused:
            return self._refuse(request, refused)
        return web.Response(
            body=orjson.dumps(alert_rules.review(body)), content_type="application/json"
        )

    async def _audit_intake(self, request: web.Request) -> web.Response:
        if self.audit_token is not None:
            # Compared as bytes: hmac.compare_digest refuses non-ASCII str (a TypeError,
            # which would be a 500); aiohttp decodes header bytes as UTF-8 with
            # surrogateescape, so encoding back recovers what was sent.
            supplied = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(supplied, f"Bearer {self.audit_token}".encode()):
                self._audit.labels(outcome="unauthorized").inc()
                return web.json_response({"error": "audit intake needs a bearer token"}, status=401)
        try:
            items = parse_event_list(await read_body(request, self.body_timeout))
        except BodyRefused as refused:
            return self._refuse(request, refused)
        except ValueError as exc:
            self._audit.labels(outcome="unparseable").inc()
            log.warning("audit webhook body refused: %s", exc)
            return web.json_response({"error": f"expected an EventList: {exc}"}, status=400)
        events = [e for e in items if isinstance(e, dict)]
        if self.audit_sink is None:
            self._audit.labels(outcome="ignored").inc(len(items))
            return web.json_response({"accepted": 0})
        try:
            answer = await self.audit_sink(events)
        except Exception:
            # A bug must not become a 500 the API server cannot act on: nothing was
            # stored, so ask for the batch again, like a full spool.
            log.exception("audit sink failed on a batch of %d events; answering 503", len(items))
            self._audit.labels(outcome="sink-error").inc(len(items))
            return web.json_response(
                {"error": "the operator could not store the batch (see its log); resend it"},
                status=503,
                headers={"Retry-After": "5"},
            )
        if answer.status != 200:
            self._audit.labels(outcome="pushed-back").inc(len(items))
            headers = (
                {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
            )
            return web.json_response({"error": answer.error}, status=answer.status, headers=headers)
        self._audit.labels(outcome="accepted").inc(answer.accepted)
        self._audit.labels(outcome="ignored").inc(len(items) - answer.accepted)
        return web.json_response({"accepted": answer.accepted})

    async def _certify(self, request: web.Request) -> web.Response:
        assert self.certificates is not None
        started = time.perf_counter()
        try:
            if (request.content_length or 0) > 4 * MAX_CERTIFICATE_REQUEST:
                raise Refused(413, "bad-request", "request body is too large")
            body = await read_body(request, self.body_timeout)
            issued = await self.certificates.issue(request.headers.get("Authorization", ""), body)
        except BodyRefused as refused:
            self._certificates.labels("bad-request").inc()
            return self._refuse(request, refused)
        except Refused as refused:
            self._certificates.labels(refused.outcome).inc()
            log.warning("certificate request refused (%d): %s", refused.status, refused)
            headers = {"Retry-After": "1"} if refused.status in (429, 503) else None
            return web.json_response(
                {"error": str(refused)}, status=refused.status, headers=headers
            )
        except Exception:
            self._certificates.labels("error").inc()
            log.exception("certificate request failed")
            return web.json_response(
                {"error": "the operator could not certify the key (see its log); retry"},
                status=503,
                headers={"Retry-After": "5"},
            )
        self._certificates.labels("issued").inc()
        self._certificate_seconds.observe(time.perf_counter() - started)
        return web.json_response(
            {"name": issued.name, "certificate": issued.record.decode()}, status=201
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.registry.synced:
            return web.Response(status=503, text="policies not loaded yet")
        return web.Response(text="ready")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics), content_type="text/plain")
