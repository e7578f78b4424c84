"""A restarted operator resumes every policy: what went missing while it was down is
recreated, and the status is brought up to date."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from auditlock.ledger.keys import Signer, generate
from auditlock.operator import names as n
from tests.helpers.policies import create_pod, create_ready_policy, file_spec, get_policy, wait_for
from tests.servers.auditlock_operator import label_namespace, start_operator
from tests.servers.kube_controlplane import KubeControlPlane


def test_restarted_operator_resumes_policies(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    root = Signer(generate())  # the chart's root key Secret outlives the operator
    first = start_operator(kube, audit_intake=False, register=False, root_key=root)
    try:
        before = create_ready_policy(kube, kube_namespace, "resumed", file_spec(tmp_path / "trail"))
    finally:
        first.stop()
    # While the operator is down, its ConfigMap is deleted by someone.
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        core.delete_namespaced_config_map(n.config_map_name("resumed"), kube_namespace)
    second = start_operator(kube, audit_intake=False, register=False, root_key=root)
    try:
        assert second.thread.policies.get(kube_namespace, "resumed") is not None

        def recreated() -> bool:
            with kube.api_client() as api:
                try:
                    client.CoreV1Api(api).read_namespaced_config_map(
                        n.config_map_name("resumed"), kube_namespace
                    )
                except ApiException as exc:
                    if exc.status == 404:
                        return False
                    raise
            return True

        wait_for("the ConfigMap recreated on resume", recreated, timeout=15)
        after = get_policy(kube, kube_namespace, "resumed")
        # Same key (the root key's Secret survived), same configuration.
        assert after["status"]["keyFingerprint"] == before["status"]["keyFingerprint"]
        assert after["status"]["configHash"] == before["status"]["configHash"]
    finally:
        second.stop()


def test_pod_count_follows_pods_without_waiting_for_the_periodic_refresh(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    label_namespace(kube, kube_namespace)
    running = start_operator(kube, audit_intake=False, refresh_seconds=600)
    try:
        create_ready_policy(kube, kube_namespace, "live", file_spec(tmp_path / "trail"))
        for _ in range(3):
            create_pod(kube, kube_namespace, {"app": "payments"})
        wait_for(
            "podsInjected == 3 well before the 600 s refresh",
            lambda: get_policy(kube, kube_namespace, "live")["status"].get("podsInjected") == 3,
            timeout=10,
        )
    finally:
        running.stop()


def test_classic_sidecar_mode_for_api_servers_before_1_29(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    """The rig is >= 1.29 (native sidecars); `--sidecar-mode classic` injects the way an
    older API server gets it, and the real API server accepts that pod too."""
    kube = auditpolicy_crd
    label_namespace(kube, kube_namespace)
    running = start_operator(kube, audit_intake=False, sidecar_mode="classic")
    try:
        create_ready_policy(kube, kube_namespace, "classic", file_spec(tmp_path / "trail"))
        pod = create_pod(kube, kube_namespace, {"app": "payments"})
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert names == ["app", n.COLLECTOR_CONTAINER]
        assert not pod["spec"].get("initContainers")
        assert "restartPolicy" not in pod["spec"]["containers"][1]
    finally:
        running.stop()
