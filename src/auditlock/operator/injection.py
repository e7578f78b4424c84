"""Build the collector sidecar and the JSON patch that adds it to a pod.

Pure functions over plain dicts (the pod as it arrives in an AdmissionReview), so the
mutating webhook stays fast and every rule here is unit-testable. The patch replaces
whole top-level lists (`add` on an existing member replaces it, RFC 6902), which keeps it
correct whether or not the pod already had init containers, volumes or annotations.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from auditlock.operator import names as n
from auditlock.operator.registry import PolicyEntry
from auditlock.operator.stream_ids import pod_stream_env

JsonPatch = list[dict[str, Any]]


@dataclass(frozen=True)
class InjectionSettings:
    image: str
    native_sidecar: bool  # API server >= 1.29: init container with restartPolicy Always
    cluster: str = ""
    image_pull_policy: str = "IfNotPresent"
    run_as_user: int = 65532
    # signing: perPod: where collectors get their keys certified, and the CA of that
    # HTTPS server (PEM); operator/certificates.py.
    certificate_url: str = ""
    certificate_ca: str = ""


def has_collector(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if container.get("name") == n.COLLECTOR_CONTAINER:
                return True
    return False


def opted_out(pod: dict[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(n.ANNOTATION_INJECT, "")).lower() == "false"


_STREAM_ENV = "AUDITLOCK_SIDECAR__STREAM__"


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def collector_container(entry: PolicyEntry, settings: InjectionSettings) -> dict[str, Any]:
    spec = entry.spec
    env: list[dict[str, Any]] = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_UID", "metadata.uid"),
        _field_env("NODE_NAME", "spec.nodeName"),
        # $(VAR) expands variables defined earlier in this list (Kubernetes env syntax).
        {"name": "AUDITLOCK_SIDECAR__STREAM__ID", "value": pod_stream_env(settings.cluster)},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__POD", "value": "$(POD_NAME)"},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__NAMESPACE", "value": "$(POD_NAMESPACE)"},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__NODE", "value": "$(NODE_NAME)"},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__CONTAINER", "value": n.COLLECTOR_CONTAINER},
    ]
    if spec.signing == "perPod":
        key_mount = {
            "name": n.VOLUME_CERTIFICATE_TOKEN,
            "mountPath": n.CERTIFICATE_TOKEN_MOUNT,
            "readOnly": True,
        }
        env.append(
            {
                "name": "AUDITLOCK_SIDECAR__STREAM__CERTIFICATE_URL",
                "value": settings.certificate_url,
            }
        )
        env.append(
            {"name": "AUDITLOCK_SIDECAR__STREAM__CERTIFICATE_CA", "value": settings.certificate_ca}
        )
    else:
        key_mount = {"name": n.VOLUME_KEY, "mountPath": n.KEY_MOUNT, "readOnly": True}
    mounts: list[dict[str, Any]] = [
        key_mount,
        {"name": n.VOLUME_CONFIG, "mountPath": n.CONFIG_MOUNT, "readOnly": True},
        {"name": n.VOLUME_SPOOL, "mountPath": n.SPOOL_MOUNT},
        {"name": n.VOLUME_TMP, "mountPath": n.TMP_MOUNT},
    ]
    s3 = spec.destination.s3
    if s3 is not None and s3.credentials_secret is not None:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append(
                {
                    "name": var,
                    "valueFrom": {"secretKeyRef": {"name": s3.credentials_secret.name, "key": var}},
                }
            )
    gcs = spec.destination.gcs
    if gcs is not None and gcs.credentials_secret is not None:
        env.append(
            {
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": f"{n.GCS_CREDENTIALS_MOUNT}/key.json",
            }
        )
        mounts.append(
            {
                "name": n.VOLUME_GCS_CREDENTIALS,
                "mountPath": n.GCS_CREDENTIALS_MOUNT,
                "readOnly": True,
            }
        )
    resources = spec.sidecar.resources.model_dump(exclude_none=True)
    probe = {"httpGet": {"path": "/healthz", "port": n.HEALTH_PORT}, "periodSeconds": 10}
    container: dict[str, Any] = {
        "name": n.COLLECTOR_CONTAINER,
        "image": spec.sidecar.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["auditlock", "sidecar", "--config", f"{n.CONFIG_MOUNT}/{n.CONFIG_FILE}"],
        "env": env,
        "ports": [{"name": "al-health", "containerPort": n.HEALTH_PORT}],
        "volumeMounts": mounts,
        "resources": {k: v for k, v in resources.items() if v},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "livenessProbe": {**probe, "failureThreshold": 6},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": n.HEALTH_PORT},
            "periodSeconds": 5,
        },
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 30},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.native_sidecar:
        # A native sidecar starts before the app and stops after it (KEP-753).
        container["restartPolicy"] = "Always"
    return container


def collector_volumes(entry: PolicyEntry) -> list[dict[str, Any]]:
    if entry.spec.signing == "perPod":
        # The collector proves its pod with this token; its key never touches a volume.
        token = {
            "audience": n.CERTIFICATE_AUDIENCE,
            "expirationSeconds": n.CERTIFICATE_TOKEN_SECONDS,
            "path": "token",
        }
        key_volume: dict[str, Any] = {
            "name": n.VOLUME_CERTIFICATE_TOKEN,
            "projected": {"sources": [{"serviceAccountToken": token}], "defaultMode": 0o440},
        }
    else:
        key_volume = {
            "name": n.VOLUME_KEY,
            "secret": {"secretName": n.key_secret_name(entry.name), "defaultMode": 0o440},
        }
    volumes: list[dict[str, Any]] = [
        key_volume,
        {"name": n.VOLUME_CONFIG, "configMap": {"name": n.config_map_name(entry.name)}},
        {
            "name": n.VOLUME_SPOOL,
            "emptyDir": {"sizeLimit": f"{entry.spec.delivery.spool_limit_mib}Mi"},
        },
        {"name": n.VOLUME_TMP, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    gcs = entry.spec.destination.gcs
    if gcs is not None and gcs.credentials_secret is not None:
        volumes.append(
            {
                "name": n.VOLUME_GCS_CREDENTIALS,
                "secret": {"secretName": gcs.credentials_secret.name, "defaultMode": 0o440},
            }
        )
    return volumes


def watched_mounts(pod: dict[str, Any], paths: list[str]) -> list[dict[str, Any]]:
    """Read-only mounts that let the collector see the app's files under `paths`.

    Config-file capture watches paths as the app sees them (say `/etc/app/settings.yaml`);
    the collector is another container, so it gets the same volume at the same
    mountPath. A path no app container mounts is left alone: the collector then reports
    it as missing instead of watching an empty folder of its own.
    """
    spec = pod.get("spec") or {}
    found: dict[str, dict[str, Any]] = {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if container.get("name") == n.COLLECTOR_CONTAINER:
                continue  # its own mounts are what this computes, not where it looks
            for mount in container.get("volumeMounts") or []:
                root = str(mount.get("mountPath", "")).rstrip("/")
                if not root or root in found or not isinstance(mount.get("name"), str):
                    continue
                if any(p == root or p.startswith(root + "/") for p in paths):
                    found[root] = {
                        "name": mount["name"],
                        "mountPath": mount["mountPath"],
                        "readOnly": True,
                        **({"subPath": mount["subPath"]} if "subPath" in mount else {}),
                    }
    return list(found.values())


# What a policy injects is the same for every pod, so it is built once per policy
# generation and settings, not once per admission request; so is its `normalized` form,
# which every "already injected?" comparison needs.
@dataclass(frozen=True)
class _Fragments:
    container: dict[str, Any]
    volumes: list[dict[str, Any]]
    normalized_container: dict[str, Any]
    normalized_volumes: dict[str, Any]  # by volume name


_FRAGMENTS: dict[tuple[Any, ...], _Fragments] = {}
_FRAGMENTS_MAX = 4096


def _fragments(entry: PolicyEntry, settings: InjectionSettings) -> _Fragments:
    key = (entry.namespace, entry.name, entry.uid, entry.generation, entry.config_hash, settings)
    found = _FRAGMENTS.get(key)
    if found is None:
        if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
            _FRAGMENTS.clear()
        container, volumes = collector_container(entry, settings), collector_volumes(entry)
        found = _Fragments(
            container,
            volumes,
            normalized(container),
            {v["name"]: normalized(v) for v in volumes},
        )
        _FRAGMENTS[key] = found
    return found


def _without_collector(containers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [c for c in containers or [] if c.get("name") != n.COLLECTOR_CONTAINER]


def expected_collector(
    pod: dict[str, Any], entry: PolicyEntry, settings: InjectionSettings
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(container, volumes) the operator injects into `pod` for `entry`."""
    fragments = _fragments(entry, settings)
    container = fragments.container
    extra_mounts = watched_mounts(pod, entry.spec.sources.config_files.paths)
    if extra_mounts:
        container = {**container, "volumeMounts": [*container["volumeMounts"], *extra_mounts]}
    return container, fragments.volumes


def find_collector(pod: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(list name, container) of the container named `auditlock-collector`, if any."""
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers"):
        containers = spec.get(key) or []
        if not isinstance(containers, list):
            continue  # an UPDATE's oldObject is not checked by _parse
        for container in containers:
            if isinstance(container, dict) and container.get("name") == n.COLLECTOR_CONTAINER:
                return key, container
    return None


def injected_difference(
    pod: dict[str, Any], entry: PolicyEntry, settings: InjectionSettings
) -> str | None:
    """None when `pod` carries exactly the collector `entry` injects (container, where it
    is, its volumes, the config-hash annotation); else the first difference, for the
    refusal message. Fields the API server fills with defaults compare equal to their
    default (`normalized`), so the check holds before and after admission defaulting."""
    found = find_collector(pod)
    if found is None:
        return f"the pod has no {n.COLLECTOR_CONTAINER} container"
    where, actual = found
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    for key, value in (
        (n.ANNOTATION_POLICY, entry.name),
        (n.ANNOTATION_CONFIG_HASH, entry.config_hash),
    ):
        if annotations.get(key) != value:
            return f"annotation {key} is {annotations.get(key)!r}, expected {value!r}"
    expected_where = "initContainers" if settings.native_sidecar else "containers"
    if where != expected_where:
        return f"{n.COLLECTOR_CONTAINER} is in spec.{where}, expected spec.{expected_where}"
    fragments = _fragments(entry, settings)
    expected = fragments.normalized_container
    extra_mounts = watched_mounts(pod, entry.spec.sources.config_files.paths)
    if extra_mounts:
        mounts = [*expected["volumeMounts"], *normalized(extra_mounts)]
        expected = {**expected, "volumeMounts": mounts}
    actual = normalized(_without_token_mount(actual))
    diff = difference(actual, expected, n.COLLECTOR_CONTAINER)
    if diff is not None:
        return diff
    present = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for name, volume in fragments.normalized_volumes.items():
        diff = difference(normalized(present.get(name) or {}), volume, f"volume {name}")
        if diff is not None:
            return diff
    return None


# The ServiceAccount admission plugin mounts the pod's API token into every container it
# finds, the collector too when the pod already names one on CREATE (a copied manifest),
# and again when it re-runs after a webhook changed the pod. Read-only, at a path the
# collector never reads, it changes nothing about what the collector does.
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _without_token_mount(container: dict[str, Any]) -> dict[str, Any]:
    mounts = container.get("volumeMounts")
    if not isinstance(mounts, list):
        return container
    kept = [
        m
        for m in mounts
        if not (
            isinstance(m, dict)
            and m.get("mountPath") == SERVICE_ACCOUNT_MOUNT
            and m.get("readOnly") is True
            and set(m) == {"name", "mountPath", "readOnly"}
        )
    ]
    return {**container, "volumeMounts": kept} if len(kept) != len(mounts) else container


# Values the API server fills in when a field is left out (pkg/apis/core/v1/defaults.go):
# a field equal to its default compares like an absent one.
_DEFAULTS: dict[str, Any] = {
    "terminationMessagePath": "/dev/termination-log",
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "scheme": "HTTP",
    "protocol": "TCP",
    "apiVersion": "v1",
}
_PROBE_DEFAULTS = {"periodSeconds": 10, "failureThreshold": 3}
_CONFIGMAP_DEFAULT_MODE = 0o644


def normalized(value: Any, key: str = "") -> Any:
    """`value` with defaulted fields dropped and quantities in one spelling."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in _DEFAULTS and v == _DEFAULTS[k]:
                continue
            if key.endswith("Probe") and k in _PROBE_DEFAULTS and v == _PROBE_DEFAULTS[k]:
                continue
            if key == "configMap" and k == "defaultMode" and v == _CONFIGMAP_DEFAULT_MODE:
                continue
            out[k] = normalized(v, k)
        if key == "resources":
            # Limits without requests get requests = limits.
            limits = out.get("limits") or {}
            requests = {**limits, **(out.get("requests") or {})}
            out = {k: v for k, v in (("limits", limits), ("requests", requests)) if v}
        if key in ("limits", "requests", "emptyDir"):
            out = {k: quantity(v) if k != "medium" else v for k, v in out.items()}
        return out
    if isinstance(value, list):
        return [normalized(v, key) for v in value]
    return value


_SUFFIXES: dict[str, Decimal] = {
    suffix: Decimal(2) ** (10 * i)
    for i, suffix in enumerate(("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))
} | {
    suffix: Decimal(10) ** exponent
    for suffix, exponent in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9),
                             ("T", 12), ("P", 15), ("E", 18))
}  # fmt: skip


def quantity(value: Any) -> Any:
    """A Kubernetes quantity ("0.5", "500m", "1Gi", "1e3") as a Decimal; anything that is
    not one is returned as it was (and then compares unequal to a real quantity)."""
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, factor = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, factor = text, Decimal(1)
    try:
        return Decimal(number) * factor
    except ArithmeticError:
        return value


def difference(actual: Any, expected: Any, path: str) -> str | None:
    """The first path where two JSON values differ, as a short sentence; None if equal."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                return f"{path}.{key} is missing"
            if key not in expected:
                return f"{path}.{key} is not set by the operator"
            found = difference(actual[key], expected[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(actual) != len(expected):
            return f"{path} has {len(actual)} entries, expected {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            found = difference(a, e, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if actual != expected or type(actual) is not type(expected):
        shown = str(actual)
        return f"{path} is {shown[:80]!r}, expected {str(expected)[:80]!r}"
    return None


def injection_patch(
    pod: dict[str, Any], entry: PolicyEntry, settings: InjectionSettings
) -> JsonPatch:
    """The JSON patch that injects `entry`'s collector; [] when the pod already carries
    exactly that collector (`injected_difference` is None).

    A container named `auditlock-collector` that is not the one the operator injects (a
    look-alike the pod declared, or one from an older configuration) is replaced, and so
    are volumes under the operator's names: the name is reserved, and what runs under it
    is the operator's. The patch shares the cached collector container and volumes:
    serialize it, never mutate it."""
    if injected_difference(pod, entry, settings) is None:
        return []
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    container, ours_volumes = expected_collector(pod, entry, settings)
    ours = {v["name"] for v in ours_volumes}
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in ours]
    volumes += ours_volumes
    patch: JsonPatch = []
    kept_init = _without_collector(spec.get("initContainers"))
    kept = _without_collector(spec.get("containers"))
    if settings.native_sidecar:
        patch.append(
            {"op": "add", "path": "/spec/initContainers", "value": [container, *kept_init]}
        )
        if len(kept) != len(spec.get("containers") or []):
            patch.append({"op": "add", "path": "/spec/containers", "value": kept})
    else:
        if len(kept_init) != len(spec.get("initContainers") or []):
            patch.append({"op": "add", "path": "/spec/initContainers", "value": kept_init})
        patch.append({"op": "add", "path": "/spec/containers", "value": [*kept, container]})
    patch.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    annotations = dict(meta.get("annotations") or {})
    annotations[n.ANNOTATION_POLICY] = entry.name
    annotations[n.ANNOTATION_CONFIG_HASH] = entry.config_hash
    patch.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    labels = dict(meta.get("labels") or {})
    labels[n.LABEL_POLICY] = entry.name
    patch.append({"op": "add", "path": "/metadata/labels", "value": labels})
    return patch


def patched_view(pod: dict[str, Any], patch: JsonPatch) -> dict[str, Any]:
    """The pod as `patch` leaves it, sharing every unchanged part with `pod`: for reading
    only (the admission checks), without apply_patch's deep copy."""
    result = dict(pod)
    for op in patch:
        _, top, member = op["path"].split("/")
        result[top] = {**(result.get(top) or {}), member: op["value"]}
    return result


def apply_patch(pod: dict[str, Any], patch: JsonPatch) -> dict[str, Any]:
    """Apply a patch made by `injection_patch` (only whole-member `add`s) to a copy."""
    result = copy.deepcopy(pod)
    for op in patch:
        assert op["op"] == "add"
        _, top, member = op["path"].split("/")
        result.setdefault(top, {})[member] = copy.deepcopy(op["value"])
    return result
