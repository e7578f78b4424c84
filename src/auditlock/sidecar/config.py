"""The sidecar's configuration: one file, one pydantic model, environment overrides.

The operator renders this file from an AuditPolicy and mounts it into the collector
container; `auditlock sidecar --config FILE` reads it. Every field has a default that
is safe for a pod (loopback intake, bounded spool), so a minimal file names only the
destination, the stream and the signing key:

    destination:
      url: gs://audit-bucket/trails
      retention_days: 400
    stream:
      id: payments_api-7f9c-abcde
      signing_key_file: /var/run/auditlock/key/ed25519.pem

Environment overrides use `AUDITLOCK_SIDECAR__<SECTION>__<FIELD>` (double underscores
separate levels), e.g. `AUDITLOCK_SIDECAR__SPOOL__MAX_BYTES=67108864` or
`AUDITLOCK_SIDECAR__SOURCE__POD=$(POD_NAME)` from the downward API. Values are parsed
as JSON when they look like JSON (lists, numbers, booleans), else kept as strings.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "AUDITLOCK_SIDECAR__"

Category = Literal["access", "authorization", "data", "configuration", "alert"]
_ALL_CATEGORIES: tuple[Category, ...] = (
    "access",
    "authorization",
    "data",
    "configuration",
    "alert",
)
CATEGORIES: tuple[str, ...] = _ALL_CATEGORIES


class _Section(BaseModel):
    # Unknown keys are a typo in a rendered file: refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid")


class ForwardSource(_Section):
    """Fluentd Forward protocol intake (fluent-logger, Fluent Bit, Fluentd out_forward)."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="listen address; keep it loopback")
    port: int = Field(24224, ge=0, le=65535, description="0 picks a free port (tests)")
    shared_key: str | None = Field(
        None, description="when set, clients must pass the HELO/PING/PONG handshake"
    )
    self_hostname: str = Field("auditlock-sidecar", description="our name in PONG")
    max_frame_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest message; bigger closes the connection"
    )
    chunk_memory: int = Field(
        200_000, ge=1000, description="recent chunk ids remembered to drop retransmissions"
    )


class HttpSource(_Section):
    """JSON over HTTP: POST /v1/events with an object, an array or NDJSON."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8686, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)


class ConfigFilesSource(_Section):
    """Watches mounted files (ConfigMap/Secret volumes); records hashes, never contents."""

    enabled: bool = False
    paths: list[str] = Field(default_factory=list, description="files or directories")
    poll_seconds: float = Field(2.0, gt=0)


class AccessProxySource(_Section):
    """HTTP reverse proxy in front of the app's port that records access events."""

    enabled: bool = False
    host: str = Field("0.0.0.0", description="the proxy is what Services point at")
    port: int = Field(8080, ge=0, le=65535)
    upstream: str = Field("http://127.0.0.1:8081", description="the app's real port")
    identity_headers: list[str] = Field(
        default_factory=lambda: ["x-forwarded-user", "x-remote-user", "x-auth-request-email"],
        description="headers whose value is recorded as a claimed, unverified identity",
    )
    request_id_headers: list[str] = Field(
        default_factory=lambda: ["x-request-id", "traceparent"],
        description="correlation headers: traceparent gives trace_id, the first other one "
        "present gives request_id",
    )


class Sources(_Section):
    forward: ForwardSource = Field(default_factory=ForwardSource)
    http: HttpSource = Field(default_factory=HttpSource)
    config_files: ConfigFilesSource = Field(default_factory=ConfigFilesSource)
    access_proxy: AccessProxySource = Field(default_factory=AccessProxySource)


class MatchRule(_Section):
    """Matches when the value at `field` (dotted path) equals one of `values`."""

    field: str
    values: list[str]


class PipelineConfig(_Section):
    """Policy filter and redaction applied before an event is spooled."""

    categories: list[Category] = Field(
        default_factory=lambda: list(_ALL_CATEGORIES), description="categories kept"
    )
    include: list[MatchRule] = Field(
        default_factory=list, description="when non-empty, keep only events matching one"
    )
    exclude: list[MatchRule] = Field(default_factory=list, description="drop matching events")
    redact: list[str] = Field(
        default_factory=list,
        description="dotted field paths replaced by '[REDACTED]' (e.g. attributes.password)",
    )


class SpoolConfig(_Section):
    """The write-ahead spool: every event is fsynced here before it is acknowledged."""

    dir: Path = Path("/var/lib/auditlock/spool")
    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024, description="intake pushes back")
    segment_bytes: int = Field(16 * 1024 * 1024, ge=16 * 1024)


class DeliveryConfig(_Section):
    """How events become ledger segments and reach the destination."""

    batch_max_events: int = Field(5000, ge=1, description="seal a segment at this many events")
    max_delay_seconds: float = Field(0.25, gt=0, description="seal at least this often")
    uploads_in_flight: int = Field(4, ge=1, le=64)
    retry_initial_seconds: float = Field(0.2, gt=0)
    retry_max_seconds: float = Field(10.0, gt=0)
    heartbeat_seconds: float = Field(60.0, gt=0, description="checkpoint when idle")


class DestinationConfig(_Section):
    url: str = Field(description="gs://bucket/prefix, s3://bucket/prefix or file:///path")
    retention_days: float = Field(365.0, gt=0)
    lock_mode: Literal["Locked", "Unlocked"] = "Locked"
    options: dict[str, Any] = Field(
        default_factory=dict, description="passed to the destination (endpoint, region, ...)"
    )


class StreamConfig(_Section):
    id: str = Field(
        description="one stream per sidecar: <namespace>_<pod> (letters, digits, '.', '_', '-')"
    )
    signing_key_file: Path = Field(description="Ed25519 private key (PEM)")

    @field_validator("id")
    @classmethod
    def _id_is_a_stream_name(cls, value: str) -> str:
        from auditlock.ledger.names import check_stream_id

        if "/" in value:
            raise ValueError(
                f"stream id {value[:80]!r} contains '/': ledger stream ids are one path "
                "segment; use <namespace>_<pod> (underscore cannot occur in either name)"
            )
        return check_stream_id(value)


class SourceIdentity(_Section):
    """Where this sidecar runs; copied into every event's `source` (downward API)."""

    cluster: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    node: str = ""


class HealthConfig(_Section):
    """/healthz, /readyz and /metrics. Not loopback: the kubelet and Prometheus call it."""

    host: str = "0.0.0.0"  # probes come from the node
    port: int = Field(9880, ge=0, le=65535)


class SidecarConfig(_Section):
    """The whole sidecar configuration file."""

    destination: DestinationConfig
    stream: StreamConfig
    source: SourceIdentity = Field(default_factory=SourceIdentity)
    sources: Sources = Field(default_factory=Sources)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    shutdown_grace_seconds: float = Field(
        20.0, gt=0, description="finish within this after SIGTERM (below the pod's grace)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message says where."""


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Read `path` (YAML or JSON), apply environment overrides, validate."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read sidecar config {path}: {exc.strerror}") from exc
    data = _parse(text, path)
    return config_from_dict(data, environ, where=str(path))


def config_from_dict(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None, where: str = "config"
) -> SidecarConfig:
    merged = apply_env_overrides(
        copy.deepcopy(dict(data)), os.environ if environ is None else environ
    )
    try:
        return SidecarConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid sidecar config {where}: {problems}") from None


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = _env_value(raw)
    return data


def _env_value(raw: str) -> Any:
    if raw[:1] in "[{" or raw in ("true", "false", "null") or _is_number(raw):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def _parse(text: str, path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # only when a YAML file is used: keeps the JSON path lean

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError
        raise ConfigError(f"cannot parse sidecar config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"sidecar config {path} must be a mapping at the top level")
    return data
