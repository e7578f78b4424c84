"""Render a policy into the collector's configuration file (auditlock.sidecar.config).

The ConfigMap holds one file shared by every pod of the policy. What differs per pod
(stream id, pod identity) comes from the downward API as `AUDITLOCK_SIDECAR__...`
environment overrides set by the injection webhook, so the file stays identical across
pods and its hash says whether a pod runs the current configuration.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from auditlock.operator.destination import location_options
from auditlock.operator.names import (
    ALERT_RULES_FILE,
    CERTIFICATE_TOKEN_MOUNT,
    CONFIG_FILE,
    CONFIG_MOUNT,
    HEALTH_PORT,
    KEY_FILE,
    KEY_MOUNT,
    SPOOL_MOUNT,
)
from auditlock.policy.model import MIN_SPOOL_LIMIT_MIB, AuditPolicySpec
from auditlock.sidecar.config import ForwardSource, HttpSource

MIB = 1024 * 1024
# Placeholder stream id; every pod overrides it with <cluster>_<namespace>_<pod> from the
# downward API (stream_ids.py).
STREAM_PLACEHOLDER = "unset_set-by-pod-env"
CERTIFICATE_URL_PLACEHOLDER = "https://set-by-pod-env.invalid/v1/certificates"


def render(spec: AuditPolicySpec, *, cluster: str = "") -> dict[str, Any]:
    """The sidecar configuration as a dict that `SidecarConfig` validates."""
    destination: dict[str, Any] = {
        "url": spec.destination.url,
        "retention_days": spec.retention.days,
        "lock_mode": spec.retention.mode,
        "legal_hold": spec.retention.legal_hold,
        "options": location_options(spec),
    }
    sources = spec.sources
    stream: dict[str, Any] = {"id": STREAM_PLACEHOLDER}
    if spec.signing == "perPod":
        # The operator's address and CA come from the pod's env (injection.py): they are
        # the operator's, not the policy's.
        stream["certificate_url"] = CERTIFICATE_URL_PLACEHOLDER
        stream["certificate_token_file"] = f"{CERTIFICATE_TOKEN_MOUNT}/token"
    else:
        stream["signing_key_file"] = f"{KEY_MOUNT}/{KEY_FILE}"
    config: dict[str, Any] = {
        "destination": destination,
        "stream": stream,
        "source": {"cluster": cluster},
        "sources": {
            "forward": {
                "enabled": sources.forward.enabled,
                "port": sources.forward.port,
                "chunk_memory": chunk_memory(spec.delivery.spool_limit_mib),
            },
            "http": {"enabled": sources.http.enabled, "port": sources.http.port},
            "config_files": {
                "enabled": bool(sources.config_files.paths),
                "paths": list(sources.config_files.paths),
            },
            "access_proxy": {
                "enabled": sources.access_proxy.enabled,
                "port": sources.access_proxy.listen_port,
                "upstream": f"http://127.0.0.1:{sources.access_proxy.target_port}",
            },
        },
        "pipeline": {
            "categories": list(spec.categories),
            "include": [m.model_dump() for m in spec.filters.include],
            "exclude": [m.model_dump() for m in spec.filters.exclude],
            "redact": list(spec.redaction.fields),
        },
        "spool": {"dir": SPOOL_MOUNT, **spool_sizes(spec.delivery.spool_limit_mib)},
        "delivery": {
            "batch_max_events": spec.delivery.batch_size,
            "max_delay_seconds": spec.delivery.max_delay_ms / 1000,
        },
        "health": {"port": HEALTH_PORT},
        # The namespace's AuditAlertRules, kept in the same ConfigMap by the operator
        # (operator/alerting.py) and re-read by the collector when they change.
        "alerts": {"rules_file": f"{CONFIG_MOUNT}/{ALERT_RULES_FILE}"},
    }
    return config


def spool_sizes(limit_mib: int) -> dict[str, int]:
    """The spool's sizes within an emptyDir of `limit_mib` MiB (its sizeLimit).

    On disk the spool holds its unreleased records (at most `max_bytes`), the released
    part of the file being appended to (less than `segment_bytes`), the chunk-id log
    (`chunk_memory`) and small state: an eighth of the volume each for the file being
    written and for the log and state, the rest for records, so the kubelet never evicts
    the pod for exceeding the sizeLimit. `max_bytes` is never below the largest Forward
    message or HTTP request: the policy's minimum (MIN_SPOOL_LIMIT_MIB) keeps it so.
    """
    limit = limit_mib * MIB
    segment_bytes = max(MIB, min(16 * MIB, limit // 8))
    max_bytes = limit - segment_bytes - limit // 8
    largest = max(ForwardSource().max_frame_bytes, HttpSource().max_body_bytes)
    if max_bytes < largest:
        raise ValueError(
            f"spoolLimitMiB {limit_mib} leaves a spool of {max_bytes} bytes, smaller than "
            f"the largest Forward message or HTTP request ({largest} bytes); use at least "
            f"{MIN_SPOOL_LIMIT_MIB}"
        )
    return {"max_bytes": max_bytes, "segment_bytes": segment_bytes}


def chunk_memory(limit_mib: int) -> int:
    """Chunk ids remembered: the log holds up to twice as many lines of 33 bytes, within
    half of the eighth of the volume kept for the log and state (capped at the default)."""
    lines = limit_mib * MIB // 16 // (2 * 33)
    return max(1000, min(ForwardSource().chunk_memory, lines))


def render_yaml(spec: AuditPolicySpec, *, cluster: str = "") -> str:
    return yaml.safe_dump(render(spec, cluster=cluster), sort_keys=True)


def config_hash(text: str) -> str:
    """Short, stable hash of the rendered file, recorded on pods as an annotation."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_map_data(spec: AuditPolicySpec, *, cluster: str = "") -> tuple[dict[str, str], str]:
    text = render_yaml(spec, cluster=cluster)
    return {CONFIG_FILE: text}, config_hash(text)
