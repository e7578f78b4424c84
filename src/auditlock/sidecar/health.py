"""/healthz, /readyz and /metrics (aiohttp, reachable by the kubelet and Prometheus).

/healthz is 200 while the event loop answers. /readyz is 200 once the spool is
recovered, the ledger stream resumed and the intake listening, and 503 with the reason
before that and while shutting down. /metrics is the Prometheus text format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from auditlock.sidecar.config import HealthConfig
from auditlock.sidecar.metrics import Metrics

log = logging.getLogger("auditlock.sidecar.health")


class HealthServer:
    def __init__(
        self,
        config: HealthConfig,
        metrics: Metrics,
        readiness: Callable[[], tuple[bool, str]],
        refresh: Callable[[], None],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.readiness = readiness
        self.refresh = refresh
        self.port = config.port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("health and metrics on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = self.readiness()
        return web.Response(status=200 if ready else 503, text=f"{reason}\n")

    async def metrics_page(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        self.refresh()
        body = generate_latest(self.metrics.registry)
        log.debug("metrics rendered in %.1f ms", (time.perf_counter() - started) * 1000)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
