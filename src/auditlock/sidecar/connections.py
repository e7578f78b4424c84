"""Connection limits shared by the collector's listeners (Forward, HTTP intake, health).

Each listener admits at most `max_connections` at once; one more is closed at once
(`connections_refused_total{listener}`), so open sockets, and the file descriptors and
buffers behind them, stay bounded whatever a client opens. Timeouts close a connection
that holds a slot without making progress (`connections_timed_out_total{listener,
phase}`): a handshake not finished, a request's headers or body, a Forward message not
completed, or an idle keep-alive connection. The health listener has its own small cap
and short timeouts, so neither the intake listeners nor a flood of probes can starve it.
"""

from __future__ import annotations

from auditlock.sidecar.metrics import Metrics


class Timeouts:
    """Seconds a connection may take per phase (None: no limit)."""

    __slots__ = ("body", "header", "idle")

    def __init__(self, header: float, body: float, idle: float) -> None:
        self.header = header
        self.body = body
        self.idle = idle


class ConnectionSlots:
    def __init__(self, listener: str, max_connections: int, metrics: Metrics | None) -> None:
        self.listener = listener
        self.max_connections = max_connections
        self.open = 0
        self._metrics = metrics
        if metrics is not None:
            metrics.connections_open.labels(listener).set_function(lambda: self.open)

    def admit(self) -> bool:
        """Take a slot; False (counted) when the listener is full."""
        if self.open >= self.max_connections:
            if self._metrics is not None:
                self._metrics.connections_refused.labels(self.listener).inc()
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def timed_out(self, phase: str) -> None:
        if self._metrics is not None:
            self._metrics.connections_timed_out.labels(self.listener, phase).inc()
