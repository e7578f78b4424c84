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
from auditlock.sidecar.http_server import HttpListener, Request, Response
from auditlock.sidecar.metrics import Metrics

log = logging.getLogger("auditlock.sidecar.health")


class HealthServer(HttpListener):
    def __init__(
        self,
        config: HealthConfig,
        metrics: Metrics,
        readiness: Callable[[], tuple[bool, str]],
        refresh: Callable[[], None],
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.refresh = refresh
        super().__init__(
            config,
            {
                ("GET", "/healthz"): self.healthz,
                ("GET", "/readyz"): self.readyz,
                ("GET", "/metrics"): self.metrics_page,
            },
            name="health",
            listener="health",
            metrics=metrics,
            # Probes and scrapes send no body: the header timeout covers it too.
            body_timeout=config.header_timeout_seconds,
            log=log,
            what="health and metrics",
        )

    async def healthz(self, request: Request) -> Response:
        return Response(200, b"ok\n")

    async def readyz(self, request: Request) -> Response:
        ready, reason = self.readiness()
        return Response(200 if ready else 503, f"{reason}\n".encode())

    async def metrics_page(self, request: Request) -> Response:
        self.refresh()
        return Response(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
