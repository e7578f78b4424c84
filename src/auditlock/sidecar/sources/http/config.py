"""The HTTP source's section of the collector config (`sources.http`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge

from auditlock.sidecar.config_fields import FORBID_EXTRA, Port, Positive


@dataclass(frozen=True, slots=True)
class HttpSource:
    """JSON over HTTP: POST /v1/events with an object, an array or NDJSON."""

    __pydantic_config__ = FORBID_EXTRA

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8686
    max_body_bytes: Annotated[int, Ge(1024)] = 8 * 1024 * 1024
    # Connection limits (sidecar/connections.py): request line + headers, then the body,
    # must each arrive within their timeout; a keep-alive connection idle longer closes.
    max_connections: Annotated[int, Ge(1)] = 32
    header_timeout_seconds: Positive = 10.0
    body_timeout_seconds: Positive = 30.0
    idle_timeout_seconds: Positive = 60.0
