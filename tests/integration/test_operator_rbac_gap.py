"""An operator whose ServiceAccount lacks a permission says so in the policy's status
(which call, the API's own message) instead of failing silently."""

from __future__ import annotations

import uuid
from pathlib import Path

from kubernetes import client

from tests.helpers.policies import condition, create_policy, file_spec, wait_condition
from tests.servers.auditlock_operator import start_operator
from tests.servers.kube_controlplane import KubeControlPlane

RULES_WITHOUT_SECRET_CREATE = [
    {
        "apiGroups": ["auditlock.io"],
        "resources": ["auditpolicies"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": ["auditlock.io"], "resources": ["auditpolicies/status"], "verbs": ["patch"]},
    {
        "apiGroups": ["auditlock.io"],
        "resources": ["auditalertrules"],
        "verbs": ["list", "watch", "patch"],
    },
    {"apiGroups": ["auditlock.io"], "resources": ["auditalertrules/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]


def test_missing_permission_is_reported_in_status(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    name = f"auditlock-limited-{uuid.uuid4().hex[:6]}"
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_service_account(
            kube_namespace, {"metadata": {"name": "operator"}}
        )
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": RULES_WITHOUT_SECRET_CREATE})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "operator", "namespace": kube_namespace}
                ],
            }
        )
    token = kube.service_account_token(kube_namespace, "operator")
    running = start_operator(
        kube,
        token=token,
        audit_intake=False,
        register=False,
        watch_fallback=False,
        secret_hash_key=None,  # the gap is Secret create: the reconcile must report it
    )
    try:
        # A shared key: the policy's key Secret is what the operator cannot create here.
        spec = file_spec(tmp_path / "trail", signing="shared")
        create_policy(kube, kube_namespace, "limited", spec)
        policy = wait_condition(
            kube, kube_namespace, "limited", "Ready", "False", reason="KubernetesApiError"
        )
        message = condition(policy, "Ready")["message"]
        assert "403" in message and "secrets" in message and "create" in message
    finally:
        running.stop()
        with kube.api_client() as api:
            rbac = client.RbacAuthorizationV1Api(api)
            rbac.delete_cluster_role_binding(name)
            rbac.delete_cluster_role(name)
