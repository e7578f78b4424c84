"""The Forward source's section of the collector config (`sources.forward`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Le

from auditlock.sidecar.config_fields import FORBID_EXTRA, Port, Positive


@dataclass(frozen=True, slots=True)
class ForwardSource:
    """Fluentd Forward protocol intake (fluent-logger, Fluent Bit, Fluentd out_forward)."""

    __pydantic_config__ = FORBID_EXTRA

    enabled: bool = True
    host: str = "127.0.0.1"  # keep it loopback
    port: Port = 24224
    shared_key: str | None = None  # when set, clients must pass HELO/PING/PONG
    self_hostname: str = "auditlock-sidecar"  # our name in PONG
    max_frame_bytes: Annotated[int, Ge(1024)] = 8 * 1024 * 1024  # bigger closes the connection
    # Forward tags under this prefix come from auditlock's operator (its own collector
    # only): their events may carry observer marks an app's may not (pipeline/observers.py).
    observer_tag_prefix: str | None = None
    # Recent chunk ids (and HTTP Idempotency-Keys, which share the memory, in their own
    # namespace) remembered in the spool to drop retransmissions: the window is the last
    # chunk_memory ids. About 100 bytes of memory each whatever the id's length (a digest
    # is kept, spool/chunk_ids.py): 20 MB at the default, 50 MB at the maximum.
    chunk_memory: Annotated[int, Ge(1000), Le(500_000)] = 200_000
    # Connection limits (sidecar/connections.py): one more connection is closed at once;
    # a handshake (shared_key set), a started message, or silence that takes longer
    # closes the connection.
    max_connections: Annotated[int, Ge(1)] = 32
    handshake_timeout_seconds: Positive = 5.0
    frame_timeout_seconds: Positive = 30.0
    idle_timeout_seconds: Positive = 300.0
