"""Every replica follows the AuditPolicies itself (kopf handlers run only in the leading
one): the registry the webhooks read follows creates, edits and deletes."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from auditlock.operator.kube import Kube
from auditlock.operator.policy_watch import PolicyWatch
from auditlock.operator.registry import PolicyRegistry
from tests.helpers.policies import (
    GROUP,
    PLURAL,
    VERSION,
    create_policy,
    file_spec,
    patch_policy,
    wait_for,
)
from tests.servers.kube_controlplane import KubeControlPlane


def test_policy_watch_follows_creates_edits_and_deletes(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    create_policy(kube, kube_namespace, "early", file_spec(tmp_path))
    registry = PolicyRegistry()
    with kube.api_client() as api:
        follower = PolicyWatch(Kube(api), registry)
        follower.start()
        try:
            assert registry.synced and registry.get(kube_namespace, "early") is not None
            create_policy(kube, kube_namespace, "later", file_spec(tmp_path))
            wait_for("later listed", lambda: registry.get(kube_namespace, "later"))
            patch_policy(kube, kube_namespace, "later", {"spec": {"enforcement": "required"}})
            wait_for(
                "edit seen",
                lambda: (e := registry.get(kube_namespace, "later")) is not None and e.required,
            )
            # An invalid edit keeps the last valid version.
            invalid = {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}
            patch_policy(kube, kube_namespace, "later", {"spec": invalid})
            client.CustomObjectsApi(api).delete_namespaced_custom_object(
                GROUP, VERSION, kube_namespace, PLURAL, "early"
            )
            wait_for("delete seen", lambda: registry.get(kube_namespace, "early") is None)
            entry = registry.get(kube_namespace, "later")
            assert entry is not None and entry.required and entry.generation == 2
        finally:
            follower.stop()
