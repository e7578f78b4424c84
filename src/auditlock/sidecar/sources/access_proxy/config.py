"""The access proxy's section of the collector config (`sources.access_proxy`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge

from auditlock.sidecar.config_fields import FORBID_EXTRA, Port, Positive


@dataclass(frozen=True, slots=True)
class AccessProxySource:
    """HTTP reverse proxy in front of the app's port that records access events."""

    __pydantic_config__ = FORBID_EXTRA

    enabled: bool = False
    host: str = "0.0.0.0"  # the proxy is what Services point at
    port: Port = 8080
    upstream: str = "http://127.0.0.1:8081"  # the app's real port
    # Request bodies larger than this are answered 413 (0: no limit). Bodies are streamed,
    # so this is a policy, not a memory bound.
    max_body_bytes: Annotated[int, Ge(0)] = 64 * 1024 * 1024
    # Access events held in memory while the spool is full; past it requests get 503.
    max_pending_events: Annotated[int, Ge(1)] = 4096
    # Open client connections; past it new ones are closed at once. Each may hold up
    # to 128 KiB of a body in flight each way, so this bounds memory too.
    max_connections: Annotated[int, Ge(1)] = 256
    # A connection with no complete request for this long (idle keep-alive, or headers
    # sent slowly) is closed. Keep it above the idle timeout of a load balancer in front.
    idle_timeout_seconds: Positive = 75.0
    # Headers whose value is recorded as a claimed, unverified identity.
    identity_headers: list[str] = field(
        default_factory=lambda: ["x-forwarded-user", "x-remote-user", "x-auth-request-email"]
    )
    # Correlation headers: traceparent gives trace_id, the first other one present gives
    # request_id.
    request_id_headers: list[str] = field(default_factory=lambda: ["x-request-id", "traceparent"])
