"""/healthz, /readyz and /metrics (reachable by the kubelet and Prometheus).

/healthz is 200 while the event loop answers. /readyz is 200 once the spool is
recovered, the ledger stream resumed and the intake listening, and 503 with the reason
before that and while shutting down. /metrics is the Prometheus text format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from auditlock.sidecar.config import HealthConfig
from auditlock.sidecar.connections import ConnectionSlots, Timeouts
from auditlock.sidecar.http_server import HttpServer, Request, Response
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
        self.server = HttpServer(
            config.host,
            config.port,
            {
                ("GET", "/healthz"): self.healthz,
                ("GET", "/readyz"): self.readyz,
                ("GET", "/metrics"): self.metrics_page,
            },
            name="health",
            # Probes and scrapes send no body: the header timeout covers it too.
            slots=ConnectionSlots("health", config.max_connections, metrics),
            timeouts=Timeouts(
                header=config.header_timeout_seconds,
                body=config.header_timeout_seconds,
                idle=config.idle_timeout_seconds,
            ),
        )

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()
        log.info("health and metrics on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        await self.server.stop()

    async def healthz(self, request: Request) -> Response:
        return Response(200, b"ok\n")

    async def readyz(self, request: Request) -> Response:
        ready, reason = self.readiness()
        return Response(200 if ready else 503, f"{reason}\n".encode())

    async def metrics_page(self, request: Request) -> Response:
        self.refresh()
        return Response(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
