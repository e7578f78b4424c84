"""Build the collector sidecar and the JSON patch that adds it to a pod.

Pure functions over plain dicts (the pod as it arrives in an AdmissionReview), so the
mutating webhook stays fast and every rule here is unit-testable. The patch replaces
whole top-level lists (`add` on an existing member replaces it, RFC 6902), which keeps it
correct whether or not the pod already had init containers, volumes or annotations.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from auditlock.operator import names as n
from auditlock.operator.registry import PolicyEntry

JsonPatch = list[dict[str, Any]]


@dataclass(frozen=True)
class InjectionSettings:
    image: str
    native_sidecar: bool  # API server >= 1.29: init container with restartPolicy Always
    cluster: str = ""
    image_pull_policy: str = "IfNotPresent"
    run_as_user: int = 65532


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
        {"name": "AUDITLOCK_SIDECAR__STREAM__ID", "value": "$(POD_NAMESPACE)_$(POD_NAME)"},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__POD", "value": "$(POD_NAME)"},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__NAMESPACE", "value": "$(POD_NAMESPACE)"},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__NODE", "value": "$(NODE_NAME)"},
        {"name": "AUDITLOCK_SIDECAR__SOURCE__CONTAINER", "value": n.COLLECTOR_CONTAINER},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": n.VOLUME_KEY, "mountPath": n.KEY_MOUNT, "readOnly": True},
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
    volumes: list[dict[str, Any]] = [
        {
            "name": n.VOLUME_KEY,
            "secret": {"secretName": n.key_secret_name(entry.name), "defaultMode": 0o440},
        },
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
            for mount in container.get("volumeMounts") or []:
                root = str(mount.get("mountPath", "")).rstrip("/")
                if not root or root in found:
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
# generation and settings, not once per admission request.
_FRAGMENTS: dict[tuple[Any, ...], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
_FRAGMENTS_MAX = 4096


def _fragments(
    entry: PolicyEntry, settings: InjectionSettings
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    key = (entry.namespace, entry.name, entry.uid, entry.generation, entry.config_hash, settings)
    found = _FRAGMENTS.get(key)
    if found is None:
        if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
            _FRAGMENTS.clear()
        found = (collector_container(entry, settings), collector_volumes(entry))
        _FRAGMENTS[key] = found
    return found


def injection_patch(
    pod: dict[str, Any], entry: PolicyEntry, settings: InjectionSettings
) -> JsonPatch:
    """The JSON patch that injects `entry`'s collector; [] when the pod already has one.

    The patch shares the cached collector container and volumes: serialize it, never
    mutate it."""
    if has_collector(pod):
        return []
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    container, ours_volumes = _fragments(entry, settings)
    extra_mounts = watched_mounts(pod, entry.spec.sources.config_files.paths)
    if extra_mounts:
        container = {**container, "volumeMounts": [*container["volumeMounts"], *extra_mounts]}
    ours = {v["name"] for v in ours_volumes}
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in ours]
    volumes += ours_volumes
    patch: JsonPatch = []
    if settings.native_sidecar:
        init = [container, *(spec.get("initContainers") or [])]
        patch.append({"op": "add", "path": "/spec/initContainers", "value": init})
    else:
        containers = [*(spec.get("containers") or []), container]
        patch.append({"op": "add", "path": "/spec/containers", "value": containers})
    patch.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    annotations = dict(meta.get("annotations") or {})
    annotations[n.ANNOTATION_POLICY] = entry.name
    annotations[n.ANNOTATION_CONFIG_HASH] = entry.config_hash
    patch.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    labels = dict(meta.get("labels") or {})
    labels[n.LABEL_POLICY] = entry.name
    patch.append({"op": "add", "path": "/metadata/labels", "value": labels})
    return patch


def apply_patch(pod: dict[str, Any], patch: JsonPatch) -> dict[str, Any]:
    """Apply a patch made by `injection_patch` (only whole-member `add`s) to a copy."""
    result = copy.deepcopy(pod)
    for op in patch:
        assert op["op"] == "add"
        _, top, member = op["path"].split("/")
        result.setdefault(top, {})[member] = copy.deepcopy(op["value"])
    return result
