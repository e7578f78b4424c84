"""Access proxy: an HTTP reverse proxy in front of the app's port that records access events.

Services point at the proxy's port; it forwards each request to the app on loopback
(`upstream`) and records one `access` event per request:

    action   the HTTP method                 outcome  success (< 400, completed) or failure
    actor    {"kind": "user", "name": <claimed identity>, "ip": <client address>}
             or {"kind": "anonymous", "name": "anonymous", "ip": ...} without one
    target   {"resource": "http", "name": <path>}
    details  {"status", "duration_ns", "query_present", "identity_header",
              "identity_verified": false, "forwarded_for", "aborted"}

Bodies stream through in 64 KiB blocks both ways, so memory does not grow with their
size. `status` is the status line the client actually received: 413 for a body over
`max_body_bytes` (refused up front from Content-Length, or when a chunked body passes
it), 502 when the upstream cannot be reached, else the upstream's. `aborted` says why
an exchange did not complete (`body_too_large`, `upstream_unreachable`,
`upstream_aborted`: the answer broke off after its status line, and the client's
connection is then closed before the body's end; `client_closed`: the client left,
and `status` is absent when it left before any answer). Each is also counted in
`access_proxy_failures_total{reason}`.

While the spool is full, events wait in memory and are retried; once
`max_pending_events` are waiting, new requests are answered 503 with `Retry-After: 1`
without reaching the upstream (`pushback_total{input="access_proxy"}`), so no request
is served unrecorded and the waiting events stay bounded (by that number plus the
requests in flight).

The identity comes from headers a gateway in front may set (`identity_headers`); the
proxy cannot check them, so every event says `identity_verified: false`. Authorization
headers and bodies are never recorded. Events are spooled in small batches off the
request path (one fsync per batch, not per request), so the proxy adds little latency;
bench/bench_sidecar_proxy.py measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from auditlock.ledger.values import normalize_ip
from auditlock.sidecar.intake import RateLimit
from auditlock.sidecar.sources import SourceContext
from auditlock.sidecar.sources.access_proxy.config import AccessProxySource
from auditlock.sidecar.sources.own_events import spool_events

log = logging.getLogger("auditlock.sidecar.access_proxy")

INPUT = "access_proxy"
TAG = "access_proxy.access"
MAX_PATH = 1024
FLUSH_SECONDS = 0.05
FLUSH_EVENTS = 512
BLOCK = 64 * 1024  # bodies pass through in blocks of this size, both ways
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",  # 100-continue is answered by the proxy's own server
    }
)


class BodyTooLarge(Exception):
    """The client's body passed `max_body_bytes`."""


@dataclass(slots=True)
class _Exchange:
    """What the client of one request actually got."""

    status: int | None = None  # the status line sent, None when none was
    # Why the exchange did not complete: body_too_large, upstream_unreachable,
    # upstream_aborted (the answer broke off), client_closed.
    aborted: str | None = None


class _CappedServer(web.Server):
    """aiohttp's low-level server with a cap on open connections: past it a new
    connection is closed at once (and counted), so clients cannot pile up connections
    in the collector's memory. aiohttp closes a connection that sends no complete
    request within `keepalive_timeout`, idle or with partial headers."""

    def __init__(
        self,
        handler: Any,
        *,
        max_connections: int,
        on_refused: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._max_connections = max_connections
        self._on_refused = on_refused

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._connections) >= self._max_connections:
            self._on_refused()
            transport.close()
            return
        super().connection_made(handler, transport)


class AccessProxy:
    def __init__(self, config: AccessProxySource, context: SourceContext) -> None:
        self.config = config
        self.intake = context.intake
        self.port = config.port
        self.upstream = config.upstream.rstrip("/")
        self._identity_headers = [h.lower() for h in config.identity_headers]
        self._correlation_headers = [h.lower() for h in config.request_id_headers]
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: list[tuple[str, int, dict[str, Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._log_budget = RateLimit(per_second=5)
        self._held = 0  # events prepared but not yet taken by the spool

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        # The low-level server: every path goes to `handle` (no routing), bodies are
        # streamed, never read whole.
        server = _CappedServer(
            self.handle,
            max_connections=self.config.max_connections,
            on_refused=lambda: self.intake.metrics.proxy_failures.labels("connection_limit").inc(),
            keepalive_timeout=self.config.idle_timeout_seconds,
            access_log=None,
        )
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._flusher = asyncio.create_task(self._flush_loop())
        log.info("access proxy on %s:%d → %s", self.config.host, self.port, self.upstream)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopping = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if len(self._pending) + self._held >= self.config.max_pending_events:
            # The spool has been full for a while: serving more requests would mean
            # serving them unrecorded, or holding their events in memory without bound.
            self.intake.metrics.pushback.labels(INPUT).inc()
            return web.Response(
                status=503,
                headers={"Retry-After": "1"},
                text="audit spool full: request not forwarded, retry later\n",
            )
        started = time.perf_counter_ns()
        exchange = _Exchange()
        try:
            return await self._forward(request, exchange)
        finally:
            if exchange.aborted:
                self._count_failure(request, exchange.aborted)
            self._record(request, exchange, time.perf_counter_ns() - started)

    async def _forward(self, request: web.BaseRequest, exchange: _Exchange) -> web.StreamResponse:
        """Streams the request to the upstream and its answer back; `exchange` ends up
        saying what the client actually received."""
        assert self._session is not None
        limit = self.config.max_body_bytes
        length = request.content_length
        if limit and length is not None and length > limit:
            return self._refuse(exchange, 413, f"request body over {limit} bytes\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if length is not None:
            headers["Content-Length"] = str(length)  # the upstream sees the client's framing
        body = self._stream_body(request, exchange) if request.body_exists else None
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.rel_url.raw_path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        response.headers.add(key, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                exchange.status = upstream.status  # the status line is on its way
                await self._stream_answer(request, upstream, response, exchange)
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            if exchange.aborted == "body_too_large":
                return self._refuse(exchange, 413, f"request body over {limit} bytes\n")
            if exchange.aborted == "client_closed":
                return web.Response(status=400)  # nobody is left to read it
            exchange.aborted = "upstream_unreachable"
            return self._refuse(exchange, 502, f"upstream {self.upstream} failed: {exc}\n")

    async def _stream_body(
        self, request: web.BaseRequest, exchange: _Exchange
    ) -> AsyncIterator[bytes]:
        """The client's body, block by block (the proxy never holds more than a block)."""
        limit = self.config.max_body_bytes
        seen = 0
        try:
            async for block in request.content.iter_chunked(BLOCK):
                seen += len(block)
                if limit and seen > limit:  # chunked: no Content-Length to refuse up front
                    exchange.aborted = "body_too_large"
                    raise BodyTooLarge(f"request body over {limit} bytes")
                yield block
        except BodyTooLarge:
            raise
        except Exception:
            exchange.aborted = "client_closed"  # it went away in the middle of its body
            raise

    async def _stream_answer(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        exchange: _Exchange,
    ) -> None:
        try:
            async for block in upstream.content.iter_chunked(BLOCK):
                try:
                    await response.write(block)
                except (ConnectionError, aiohttp.ClientConnectionResetError):
                    exchange.aborted = "client_closed"
                    return
            await response.write_eof()
        except (aiohttp.ClientError, TimeoutError):
            # The status line is sent: the only honest signal left to the client is a
            # connection closed before the body's end (never a clean end of a short body).
            exchange.aborted = "upstream_aborted"
            if request.transport is not None:
                request.transport.abort()

    @staticmethod
    def _refuse(exchange: _Exchange, status: int, text: str) -> web.Response:
        exchange.status = status
        if status == 413:
            exchange.aborted = "body_too_large"
        return web.Response(status=status, text=text)

    def _count_failure(self, request: web.BaseRequest, reason: str) -> None:
        self.intake.metrics.proxy_failures.labels(reason).inc()
        if self._log_budget.allow():
            log.warning("access proxy: %s %s: %s", request.method, request.rel_url.path, reason)

    def _record(self, request: web.BaseRequest, exchange: _Exchange, duration_ns: int) -> None:
        client = request.remote or "unknown"
        identity = None
        identity_header = None
        for name in self._identity_headers:
            value = request.headers.get(name)
            if value:
                identity, identity_header = value[:MAX_PATH], name
                break
        actor: dict[str, Any] = (
            {"kind": "user", "name": identity}
            if identity
            else {"kind": "anonymous", "name": "anonymous"}
        )
        ip = _client_ip(client)
        if ip is not None:
            actor["ip"] = ip
        status = exchange.status
        details: dict[str, Any] = {
            "duration_ns": duration_ns,
            "identity_verified": False,
            "query_present": bool(request.rel_url.raw_query_string),
        }
        if status is not None:  # none when the client left before any answer
            details["status"] = status
        if exchange.aborted:
            details["aborted"] = exchange.aborted
        if identity_header:
            details["identity_header"] = identity_header
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            details["forwarded_for"] = forwarded[:MAX_PATH]
        record: dict[str, Any] = {
            "category": "access",
            "action": request.method,
            "outcome": "success"
            if status is not None and status < 400 and not exchange.aborted
            else "failure",
            "actor": actor,
            "target": {"resource": "http", "name": (request.rel_url.raw_path or "/")[:MAX_PATH]},
            "details": details,
        }
        for name in self._correlation_headers:
            value = request.headers.get(name)
            if not value:
                continue
            if name == "traceparent":  # W3C: version-traceid-parentid-flags
                parts = value.split("-")
                if len(parts) >= 2 and len(parts[1]) == 32 and "trace_id" not in record:
                    record["trace_id"] = parts[1]
            elif "request_id" not in record:
                record["request_id"] = value[:MAX_PATH]
        self._pending.append((TAG, time.time_ns(), record))
        if len(self._pending) >= FLUSH_EVENTS:
            self._wake.set()

    async def _flush_loop(self) -> None:
        backlog: list[bytes] = []  # prepared events the spool has not taken yet
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            self._wake.clear()
            if self._pending:
                batch, self._pending = self._pending, []
                backlog += self.intake.prepare(INPUT, batch).events
            if backlog:
                done, full = await spool_events(self.intake, INPUT, backlog)
                del backlog[:done]
                self._held = len(backlog)
                if full is None:
                    continue
                # Keep them and retry: the proxy never drops an access record silently.
                if self._stopping:
                    log.error("spool closed: %d access event(s) not recorded", len(backlog))
                    self.intake.metrics.events_rejected.labels(INPUT, "spool_closed").inc(
                        len(backlog)
                    )
                    return
                await self.intake.wait_for_room(full.needed, 0.5)
            elif self._stopping and not self._pending:
                return


def _client_ip(text: str) -> str | None:
    """The client address in the ledger's canonical form; None if it is not one the
    format accepts (a Unix socket peer, or a link-local address with a zone id)."""
    try:
        return normalize_ip(text)
    except ValueError:
        return None
