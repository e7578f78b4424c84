"""AuditPolicies and pods on the rig's real API server: create, read, wait for a
condition; the specs the operator's tests start from; the operator's metrics."""

from __future__ import annotations

import base64
import ssl
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from tests.servers.auditlock_operator import RunningOperator
from tests.servers.kube_controlplane import KubeControlPlane
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import metric_value

GROUP, VERSION, PLURAL = "auditlock.io", "v1alpha1", "auditpolicies"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll `probe` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def create_policy(kube: KubeControlPlane, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AuditPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    with kube.api_client() as api:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )


def get_policy(kube: KubeControlPlane, namespace: str, name: str) -> dict[str, Any]:
    with kube.api_client() as api:
        result: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return result


def patch_policy(kube: KubeControlPlane, namespace: str, name: str, patch: dict[str, Any]) -> None:
    """A merge patch of the AuditPolicy (spec or metadata), as `kubectl patch` would."""
    with kube.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch
        )


def condition(policy: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (policy.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_condition(
    kube: KubeControlPlane,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    timeout: float = 10.0,
    reason: str | None = None,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        policy = get_policy(kube, namespace, name)
        cond = condition(policy, kind)
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return policy
        return None

    return wait_for(f"{name} {kind}={status} ({reason})", probe, timeout)


def create_ready_policy(
    kube: KubeControlPlane, namespace: str, name: str, spec: dict[str, Any], timeout: float = 10.0
) -> dict[str, Any]:
    """Create the policy and wait until the operator reports it Ready=True; return it."""
    create_policy(kube, namespace, name, spec)
    return wait_condition(kube, namespace, name, "Ready", "True", timeout=timeout)


def create_pod(
    kube: KubeControlPlane,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"app-{uuid.uuid4().hex[:8]}",
            "labels": labels,
            "annotations": annotations or {},
        },
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
    with kube.api_client() as api:
        created = client.CoreV1Api(api).create_namespaced_pod(namespace, body)
        result: dict[str, Any] = api.sanitize_for_serialization(created)
        return result


def operator_metric(running: RunningOperator, name: str, **labels: str) -> float:
    """A metric from the operator's /metrics, as Prometheus scrapes it."""
    context = ssl.create_default_context(cafile=str(running.kube.ca_path))
    with urllib.request.urlopen(f"{running.webhook_url}/metrics", context=context) as answer:
        return metric_value(answer.read().decode(), name, **labels)


def s3_spec(seaweedfs: SeaweedFS, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": {"app": "payments"}},
        "destination": {
            "s3": {
                "bucket": bucket,
                "prefix": "trail",
                "endpoint": seaweedfs.endpoint,
                "region": seaweedfs.region,
                "credentialsSecret": {"name": "s3-credentials"},
            }
        },
        "retention": {"days": 1, "mode": "Locked"},
        **extra,
    }


def file_spec(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": {"app": "payments"}},
        "destination": {"file": {"path": str(path)}},
        "retention": {"days": 7},
        **extra,
    }


def create_s3_secret(kube: KubeControlPlane, namespace: str, seaweedfs: SeaweedFS) -> None:
    data = {
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "s3-credentials"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            },
        )
