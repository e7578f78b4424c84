"""What no other container of a pod may do to the collector.

The collector's signing key lets whoever reads it forge checkpoints, and its spool holds
acknowledged events not yet stored: an app container that can read the key or write the
spool defeats the trail while `verify` still passes. So, in a namespace with an
AuditPolicy (see docs/architecture.md, "Injection"):

- the operator's volumes (`auditlock-key`, `-spool`, `-config`, `-tmp`,
  `-gcs-credentials`) are mounted only by the collector the operator injected;
- no volume, projected volume, env var or envFrom of any container (ephemeral ones
  included) refers to a policy's key Secret, except the collector's own key volume;
- no ephemeral container (`kubectl debug --target`) joins the collector's processes;
- `shareProcessNamespace: true` or `hostPID: true` beside a collector is reported
  (`Findings.shared_with`); the webhooks refuse it under `enforcement: required` and warn
  otherwise.

"The collector" is the container `injection.injected_difference` accepts for the
policy named in the pod's `auditlock.io/policy` annotation, never just a container
with the right name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditlock.operator import injection
from auditlock.operator import names as n
from auditlock.operator.registry import PolicyEntry

RESERVED_VOLUMES = frozenset(
    {
        n.VOLUME_KEY,
        n.VOLUME_CERTIFICATE_TOKEN,
        n.VOLUME_CONFIG,
        n.VOLUME_SPOOL,
        n.VOLUME_TMP,
        n.VOLUME_GCS_CREDENTIALS,
    }
)
CONTAINER_LISTS = (
    ("initContainers", "init container"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeral container"),
)


@dataclass
class Findings:
    refusals: list[str] = field(default_factory=list)
    # The collector's policy, when the pod shares one process namespace with it, and the
    # pod field that does it.
    shared_with: PolicyEntry | None = None
    shared_by: str = ""


def genuine_policy(
    pod: dict[str, Any], policies: Sequence[PolicyEntry], settings: injection.InjectionSettings
) -> PolicyEntry | None:
    """The policy whose collector the pod carries exactly, if any."""
    name = ((pod.get("metadata") or {}).get("annotations") or {}).get(n.ANNOTATION_POLICY)
    for entry in policies:
        if entry.name == name and injection.injected_difference(pod, entry, settings) is None:
            return entry
    return None


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for key, kind in CONTAINER_LISTS:
        for container in spec.get(key) or []:
            yield key, kind, container


def _volume_secrets(volume: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    secret = volume.get("secret")
    if isinstance(secret, dict):
        names.add(str(secret.get("secretName")))
    projected = volume.get("projected")
    if isinstance(projected, dict):
        for source in projected.get("sources") or []:
            ref = source.get("secret") if isinstance(source, dict) else None
            if isinstance(ref, dict):
                names.add(str(ref.get("name")))
    return names


def _env_secrets(container: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for var in container.get("env") or []:
        ref = ((var or {}).get("valueFrom") or {}).get("secretKeyRef")
        if isinstance(ref, dict):
            names.add(str(ref.get("name")))
    for source in container.get("envFrom") or []:
        ref = (source or {}).get("secretRef")
        if isinstance(ref, dict):
            names.add(str(ref.get("name")))
    return names


def check(
    pod: dict[str, Any], policies: Sequence[PolicyEntry], settings: injection.InjectionSettings
) -> Findings:
    """What in `pod` reaches a collector's key, spool or processes; `policies` are the
    namespace's (their key Secrets live there)."""
    if not policies:
        return Findings()
    return check_with(pod, policies, genuine_policy(pod, policies, settings))


def check_with(
    pod: dict[str, Any], policies: Sequence[PolicyEntry], genuine: PolicyEntry | None
) -> Findings:
    """`check` when the caller already knows `genuine_policy` (it just injected it)."""
    findings = Findings()
    if not policies:
        return findings
    spec = pod.get("spec") or {}

    def key_refs(names: set[str]) -> str:
        # Most pods name no Secret at all: policy key names are only built when one does.
        if not names:
            return ""
        owners = {n.key_secret_name(p.name): p.name for p in policies}
        return ", ".join(
            f"Secret {s} (the signing key of AuditPolicy {owners[s]})"
            for s in sorted(names & owners.keys())
        )

    for volume in spec.get("volumes") or []:
        name = volume.get("name")
        if genuine is not None and name == n.VOLUME_KEY:
            continue  # compared with what the operator injects by genuine_policy
        refs = key_refs(_volume_secrets(volume))
        if refs:
            findings.refusals.append(f"volume {name!r} reads {refs}")
    for key, kind, container in _containers(spec):
        name = container.get("name")
        if genuine is not None and key != "ephemeralContainers" and name == n.COLLECTOR_CONTAINER:
            continue
        what = f"{kind} {name!r}"
        if name == n.COLLECTOR_CONTAINER:
            what += " (not the collector the operator injects)"
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") in RESERVED_VOLUMES:
                findings.refusals.append(
                    f"{what} mounts volume {mount.get('name')!r}, which only the collector "
                    "the operator injects may mount"
                )
        refs = key_refs(_env_secrets(container))
        if refs:
            findings.refusals.append(f"{what} has environment from {refs}")
        if key == "ephemeralContainers" and container.get("targetContainerName") == (
            n.COLLECTOR_CONTAINER
        ):
            findings.refusals.append(
                f"{what} targets {n.COLLECTOR_CONTAINER}: it would see the collector's "
                "processes and, through them, its key and spool"
            )
    if genuine is not None:
        # hostPID puts the collector in the node's process namespace: the pod's other
        # containers see it there exactly as with shareProcessNamespace.
        for field_name in ("shareProcessNamespace", "hostPID"):
            if spec.get(field_name) is True:
                findings.shared_with, findings.shared_by = genuine, field_name
                break
    return findings


def shared_message(pod_name: str, findings: Findings) -> str:
    assert findings.shared_with is not None
    return (
        f"pod {pod_name} sets {findings.shared_by}: true beside the {n.COLLECTOR_CONTAINER} "
        f"of AuditPolicy {findings.shared_with.name}: its other containers can read the "
        "collector's signing key and spool through /proc"
    )
