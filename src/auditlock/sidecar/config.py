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

from annotated_types import Ge, Le

from auditlock.ledger.vocabulary import CATEGORIES, Category
from auditlock.sidecar.config_fields import FORBID_EXTRA, Port, Positive
from auditlock.sidecar.sources.access_proxy.config import AccessProxySource as AccessProxySource
from auditlock.sidecar.sources.config_files.config import ConfigFilesSource as ConfigFilesSource
from auditlock.sidecar.sources.forward.config import ForwardSource as ForwardSource
from auditlock.sidecar.sources.http.config import HttpSource as HttpSource

if TYPE_CHECKING:
    from pydantic import TypeAdapter

ENV_PREFIX = "AUDITLOCK_SIDECAR__"


@dataclass(frozen=True, slots=True)
class Sources:
    """One section per source; each source keeps its section's class beside its code
    (sources/*/config.py) and is listed in `sources.SOURCES`."""

    __pydantic_config__ = FORBID_EXTRA

    forward: ForwardSource = field(default_factory=ForwardSource)
    http: HttpSource = field(default_factory=HttpSource)
    config_files: ConfigFilesSource = field(default_factory=ConfigFilesSource)
    access_proxy: AccessProxySource = field(default_factory=AccessProxySource)


@dataclass(frozen=True, slots=True)
class MatchRule:
    """Matches when the value at `field` (dotted path) equals one of `values`."""

    __pydantic_config__ = FORBID_EXTRA

    field: str
    values: list[str]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Policy filter and redaction applied before an event is spooled."""

    __pydantic_config__ = FORBID_EXTRA

    categories: list[Category] = field(default_factory=lambda: list(CATEGORIES))
    include: list[MatchRule] = field(default_factory=list)  # non-empty: keep only matches
    exclude: list[MatchRule] = field(default_factory=list)  # drop matching events
    # Dotted field paths replaced by '[REDACTED]' (e.g. details.password: an app's own
    # fields are stored under details).
    redact: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """The write-ahead spool: every event is fsynced here before it is acknowledged."""

    __pydantic_config__ = FORBID_EXTRA

    dir: Path = Path("/var/lib/auditlock/spool")
    max_bytes: Annotated[int, Ge(64 * 1024)] = 256 * 1024 * 1024  # full: intake pushes back
    segment_bytes: Annotated[int, Ge(16 * 1024)] = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How events become ledger segments and reach the destination."""

    __pydantic_config__ = FORBID_EXTRA

    batch_max_events: Annotated[int, Ge(1)] = 5000  # seal a segment at this many events
    # Seal a batch once its oldest event has waited this long (shipping.py: or a little
    # later while earlier batches are being stored). Each seal is a segment and a signed
    # checkpoint: 10 a second at most under load, one per event when events are rare.
    max_delay_seconds: Positive = 0.1
    uploads_in_flight: Annotated[int, Ge(1), Le(64)] = 4
    retry_initial_seconds: Positive = 0.2
    retry_max_seconds: Positive = 10.0
    heartbeat_seconds: Positive = 60.0  # checkpoint when idle


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    __pydantic_config__ = FORBID_EXTRA

    url: str  # gs://bucket/prefix, s3://bucket/prefix or file:///path
    retention_days: Positive = 365.0
    lock_mode: Literal["Locked", "Unlocked"] = "Locked"
    # Also a legal hold on every segment and checkpoint (S3 legal hold, GCS temporary
    # hold): no one can delete the object until the hold is lifted, whatever the date.
    legal_hold: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # endpoint, region, ...


@dataclass(frozen=True, slots=True)
class StreamConfig:
    __pydantic_config__ = FORBID_EXTRA

    # One stream per sidecar; under the operator <cluster>_<namespace>_<pod> (letters,
    # digits, '.', '_', '-').
    id: str
    # The shared policy key (PEM), mounted from a Secret; or, with `certificate_url`
    # instead, a per-pod key generated at start, kept in memory only and certified by
    # the operator (sidecar/pod_key.py, docs/operator.md "Per-pod keys").
    signing_key_file: Path | None = None
    certificate_url: str = ""  # https://<operator>/v1/certificates
    # The pod's projected ServiceAccount token (audience auditlock-certificates),
    # re-read for every request: the kubelet rotates it.
    certificate_token_file: str = "/var/run/auditlock/certificate-token/token"
    # CA of the operator's TLS certificate, as a file or as PEM text (the injected
    # collector gets it from its env); both empty: the system CAs.
    certificate_ca_file: str = ""
    certificate_ca: str = ""

    def __post_init__(self) -> None:
        from auditlock.ledger.names import check_stream_id

        if (self.signing_key_file is None) == (not self.certificate_url):
            raise ValueError(
                "give exactly one of signing_key_file (a shared key) and certificate_url "
                "(a per-pod key certified by the operator)"
            )

        if "/" in self.id:
            raise ValueError(
                f"stream id {self.id[:80]!r} contains '/': ledger stream ids are one path "
                "segment; use <namespace>_<pod> (underscore cannot occur in either name)"
            )
        check_stream_id(self.id)


@dataclass(frozen=True, slots=True)
class SourceIdentity:
    """Where this sidecar runs; copied into every event's `source` (downward API)."""

    __pydantic_config__ = FORBID_EXTRA

    cluster: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    node: str = ""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """/healthz, /readyz and /metrics. Not loopback: the kubelet and Prometheus call it."""

    __pydantic_config__ = FORBID_EXTRA

    host: str = "0.0.0.0"  # probes come from the node
    port: Port = 9880
    # Reachable from the cluster: a small cap and short timeouts, so it cannot be used to
    # exhaust the collector, and intake connections cannot starve the probes.
    max_connections: Annotated[int, Ge(1)] = 16
    header_timeout_seconds: Positive = 2.0
    idle_timeout_seconds: Positive = 5.0


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Alert rules evaluated on this pod's events (docs/alerts.md, "Where rules run").

    The rules file (JSON, written by the operator into the policy's ConfigMap as
    `alerts.json`: `{"rules": [{"name", "namespace", "spec"}], "alertmanager_url"}`) is
    re-read when it changes, so rules reach running collectors without a restart."""

    __pydantic_config__ = FORBID_EXTRA

    rules_file: str | None = None  # None: no rules, nothing evaluated
    reload_seconds: Positive = 10.0
    tick_seconds: Positive = 1.0
    resend_seconds: Positive = 60.0
    queue_events: Annotated[int, Ge(1)] = 100_000  # events waiting for evaluation, at most
    # The collector's own built-in alerts (docs/alerts.md, "Built-in rules").
    spool_filling_ratio: Annotated[float, Ge(0), Le(1)] = 0.8
    uploads_failing_seconds: Positive = 300.0


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """The whole sidecar configuration file."""

    __pydantic_config__ = FORBID_EXTRA

    destination: DestinationConfig
    stream: StreamConfig
    source: SourceIdentity = field(default_factory=SourceIdentity)
    sources: Sources = field(default_factory=Sources)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
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
