"""The sidecar's configuration: one file, one model validated by pydantic, environment
overrides.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Ge, Gt, Le

from auditlock.ledger.vocabulary import CATEGORIES, Category

if TYPE_CHECKING:
    from pydantic import TypeAdapter

ENV_PREFIX = "AUDITLOCK_SIDECAR__"

Port = Annotated[int, Ge(0), Le(65535)]  # 0 picks a free port (tests)
Positive = Annotated[float, Gt(0)]

# The sections are plain frozen dataclasses, validated by pydantic at the boundary
# (`config_from_dict`). The long-running collector process reads an already validated
# file into the same classes without importing pydantic (handoff.py), which keeps
# about 8 MiB of pydantic out of the pod's memory limit. Unknown keys are a typo in a
# rendered file: every section refuses them.
_FORBID_EXTRA = {"extra": "forbid"}


@dataclass(frozen=True, slots=True)
class ForwardSource:
    """Fluentd Forward protocol intake (fluent-logger, Fluent Bit, Fluentd out_forward)."""

    __pydantic_config__ = _FORBID_EXTRA

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


@dataclass(frozen=True, slots=True)
class HttpSource:
    """JSON over HTTP: POST /v1/events with an object, an array or NDJSON."""

    __pydantic_config__ = _FORBID_EXTRA

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


@dataclass(frozen=True, slots=True)
class ConfigFilesSource:
    """Watches mounted files (ConfigMap/Secret volumes); records hashes, never contents."""

    __pydantic_config__ = _FORBID_EXTRA

    enabled: bool = False
    paths: list[str] = field(default_factory=list)  # files or directories
    poll_seconds: Positive = 2.0
    # Entries (files and directories) examined per scan; past it the rest is reported
    # as skipped. Bounds the scan's memory and time whatever a folder holds.
    max_files: Annotated[int, Ge(1)] = 10_000
    # Larger files are reported as skipped, not hashed (ConfigMaps and Secrets hold 1 MiB).
    max_file_bytes: Annotated[int, Ge(1)] = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AccessProxySource:
    """HTTP reverse proxy in front of the app's port that records access events."""

    __pydantic_config__ = _FORBID_EXTRA

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


@dataclass(frozen=True, slots=True)
class Sources:
    __pydantic_config__ = _FORBID_EXTRA

    forward: ForwardSource = field(default_factory=ForwardSource)
    http: HttpSource = field(default_factory=HttpSource)
    config_files: ConfigFilesSource = field(default_factory=ConfigFilesSource)
    access_proxy: AccessProxySource = field(default_factory=AccessProxySource)


@dataclass(frozen=True, slots=True)
class MatchRule:
    """Matches when the value at `field` (dotted path) equals one of `values`."""

    __pydantic_config__ = _FORBID_EXTRA

    field: str
    values: list[str]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Policy filter and redaction applied before an event is spooled."""

    __pydantic_config__ = _FORBID_EXTRA

    categories: list[Category] = field(default_factory=lambda: list(CATEGORIES))
    include: list[MatchRule] = field(default_factory=list)  # non-empty: keep only matches
    exclude: list[MatchRule] = field(default_factory=list)  # drop matching events
    # Dotted field paths replaced by '[REDACTED]' (e.g. details.password: an app's own
    # fields are stored under details).
    redact: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """The write-ahead spool: every event is fsynced here before it is acknowledged."""

    __pydantic_config__ = _FORBID_EXTRA

    dir: Path = Path("/var/lib/auditlock/spool")
    max_bytes: Annotated[int, Ge(64 * 1024)] = 256 * 1024 * 1024  # full: intake pushes back
    segment_bytes: Annotated[int, Ge(16 * 1024)] = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How events become ledger segments and reach the destination."""

    __pydantic_config__ = _FORBID_EXTRA

    batch_max_events: Annotated[int, Ge(1)] = 5000  # seal a segment at this many events
    max_delay_seconds: Positive = 0.25  # seal at least this often
    uploads_in_flight: Annotated[int, Ge(1), Le(64)] = 4
    retry_initial_seconds: Positive = 0.2
    retry_max_seconds: Positive = 10.0
    heartbeat_seconds: Positive = 60.0  # checkpoint when idle


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    __pydantic_config__ = _FORBID_EXTRA

    url: str  # gs://bucket/prefix, s3://bucket/prefix or file:///path
    retention_days: Positive = 365.0
    lock_mode: Literal["Locked", "Unlocked"] = "Locked"
    # Also a legal hold on every segment and checkpoint (S3 legal hold, GCS temporary
    # hold): no one can delete the object until the hold is lifted, whatever the date.
    legal_hold: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # endpoint, region, ...


@dataclass(frozen=True, slots=True)
class StreamConfig:
    __pydantic_config__ = _FORBID_EXTRA

    # One stream per sidecar; under the operator <cluster>_<namespace>_<pod> (letters,
    # digits, '.', '_', '-').
    id: str
    signing_key_file: Path  # Ed25519 private key (PEM)

    def __post_init__(self) -> None:
        from auditlock.ledger.names import check_stream_id

        if "/" in self.id:
            raise ValueError(
                f"stream id {self.id[:80]!r} contains '/': ledger stream ids are one path "
                "segment; use <namespace>_<pod> (underscore cannot occur in either name)"
            )
        check_stream_id(self.id)


@dataclass(frozen=True, slots=True)
class SourceIdentity:
    """Where this sidecar runs; copied into every event's `source` (downward API)."""

    __pydantic_config__ = _FORBID_EXTRA

    cluster: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    node: str = ""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """/healthz, /readyz and /metrics. Not loopback: the kubelet and Prometheus call it."""

    __pydantic_config__ = _FORBID_EXTRA

    host: str = "0.0.0.0"  # probes come from the node
    port: Port = 9880
    # Reachable from the cluster: a small cap and short timeouts, so it cannot be used to
    # exhaust the collector, and intake connections cannot starve the probes.
    max_connections: Annotated[int, Ge(1)] = 16
    header_timeout_seconds: Positive = 2.0
    idle_timeout_seconds: Positive = 5.0


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """The whole sidecar configuration file."""

    __pydantic_config__ = _FORBID_EXTRA

    destination: DestinationConfig
    stream: StreamConfig
    source: SourceIdentity = field(default_factory=SourceIdentity)
    sources: Sources = field(default_factory=Sources)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    # Finish within this after SIGTERM (keep it below the pod's grace period).
    shutdown_grace_seconds: Positive = 20.0
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
    from pydantic import ValidationError

    try:
        config = _adapter().validate_python(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid sidecar config {where}: {problems}") from None
    path_problems = _pipeline_path_problems(config.pipeline)
    if path_problems:
        raise ConfigError(f"invalid sidecar config {where}: {'; '.join(path_problems)}")
    return config


def _pipeline_path_problems(pipeline: PipelineConfig) -> list[str]:
    """The AuditPolicy's path rules (docs/operator.md, "Field paths"), for a file written
    by hand: a redaction path that names nothing would store the secret under a lock.
    Checked here in the front end; the collector never imports the event model."""
    from auditlock.policy.paths import path_problem, redaction_problem

    found: list[str] = []
    for section in ("include", "exclude"):
        for i, rule in enumerate(getattr(pipeline, section)):
            problem = path_problem(rule.field)
            if problem:
                found.append(f"pipeline.{section}.{i}.field: {problem}")
    for i, path in enumerate(pipeline.redact):
        problem = redaction_problem(path)
        if problem:
            found.append(f"pipeline.redact.{i}: {problem}")
    return found


def config_json(config: SidecarConfig, indent: int | None = None) -> bytes:
    """The validated config as JSON (what `--check` prints and the handoff passes on)."""
    return _adapter().dump_json(config, indent=indent)


def _adapter() -> TypeAdapter[SidecarConfig]:
    from pydantic import TypeAdapter

    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(SidecarConfig)
    return _ADAPTER


_ADAPTER: TypeAdapter[SidecarConfig] | None = None


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
