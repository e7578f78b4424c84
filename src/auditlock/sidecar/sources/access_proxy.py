"""Access proxy: an HTTP reverse proxy in front of the app's port that records access events.

Services point at the proxy's port; it forwards each request to the app on loopback
(`upstream`), streams the answer back, and records one `access` event per request:

    action   the HTTP method                 outcome  success (< 400) or failure
    actor    {"kind": "user", "name": <claimed identity>, "ip": <client address>}
             or {"kind": "anonymous", "name": "anonymous", "ip": ...} without one
    target   {"resource": "http", "name": <path>}
    details  {"status", "duration_ns", "query_present", "identity_header",
              "identity_verified": false, "forwarded_for"}

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
from typing import Any

import aiohttp
from aiohttp import web

from auditlock.ledger.values import normalize_ip
from auditlock.sidecar.config import AccessProxySource
from auditlock.sidecar.intake import Intake, SpoolFull

log = logging.getLogger("auditlock.sidecar.access_proxy")

INPUT = "access_proxy"
TAG = "access_proxy.access"
MAX_PATH = 1024
FLUSH_SECONDS = 0.05
FLUSH_EVENTS = 512
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
    }
)


class AccessProxy:
    def __init__(self, config: AccessProxySource, intake: Intake) -> None:
        self.config = config
        self.intake = intake
        self.port = config.port
        self.upstream = config.upstream.rstrip("/")
        self._identity_headers = [h.lower() for h in config.identity_headers]
        self._correlation_headers = [h.lower() for h in config.request_id_headers]
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: list[tuple[str, int, dict[str, Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter_ns()
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        status = 502
        response: web.StreamResponse
        try:
            body = await request.read()
            async with self._session.request(
                request.method,
                self.upstream + request.rel_url.raw_path_qs,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            ) as upstream:
                status = upstream.status
                response = web.StreamResponse(status=status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        response.headers.add(key, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for block in upstream.content.iter_chunked(64 * 1024):
                    await response.write(block)
                await response.write_eof()
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = 502
            response = web.Response(status=502, text=f"upstream {self.upstream} failed: {exc}\n")
        finally:
            self._record(request, status, time.perf_counter_ns() - started)
        return response

    def _record(self, request: web.Request, status: int, duration_ns: int) -> None:
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
        details: dict[str, Any] = {
            "status": status,
            "duration_ns": duration_ns,
            "identity_verified": False,
            "query_present": bool(request.rel_url.raw_query_string),
        }
        if identity_header:
            details["identity_header"] = identity_header
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            details["forwarded_for"] = forwarded[:MAX_PATH]
        record: dict[str, Any] = {
            "category": "access",
            "action": request.method,
            "outcome": "success" if status < 400 else "failure",
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
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            self._wake.clear()
            if self._pending:
                batch, self._pending = self._pending, []
                prepared = self.intake.prepare(INPUT, batch)
                try:
                    await self.intake.commit(INPUT, prepared, [])
                except SpoolFull:
                    # Keep them and retry: the proxy never drops an access record silently.
                    self._pending[:0] = batch
                    if self._stopping:
                        log.error("spool closed: %d access event(s) not recorded", len(batch))
                        self.intake.metrics.events_rejected.labels(INPUT, "spool_closed").inc(
                            len(batch)
                        )
                        return
                    await asyncio.sleep(0.2)
            elif self._stopping:
                return


def _client_ip(text: str) -> str | None:
    """The client address in the ledger's canonical form; None if it is not one the
    format accepts (a Unix socket peer, or a link-local address with a zone id)."""
    try:
        return normalize_ip(text)
    except ValueError:
        return None
