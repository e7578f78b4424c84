"""Two replicas with kopf peering (as the chart runs them with --peering and
--priority random): the leader reconciles, and both answer admission correctly."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from auditlock.ledger.keys import Signer, generate
from tests.helpers.policies import create_ready_policy, file_spec, wait_for
from tests.servers.auditlock_operator import post_pod_review, start_operator
from tests.servers.kube_controlplane import KubeControlPlane

ROOT = Path(__file__).resolve().parents[2]
PEERING_CRD = ROOT / "charts" / "auditlock" / "crds" / "clusterkopfpeerings.kopf.dev.yaml"


def _install_peering(kube: KubeControlPlane, name: str) -> None:
    crd = yaml.safe_load(PEERING_CRD.read_text())
    with kube.api_client() as api:
        try:
            client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise

        def established() -> bool:
            got = client.ApiextensionsV1Api(api).read_custom_resource_definition(
                crd["metadata"]["name"]
            )
            return any(
                c.type == "Established" and c.status == "True" for c in got.status.conditions or []
            )

        wait_for("peering CRD established", established)
        try:
            client.CustomObjectsApi(api).create_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings",
                {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                 "metadata": {"name": name}},
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 409:
                raise


def test_two_peered_replicas_one_leads_both_serve_webhooks(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    _install_peering(kube, "auditlock-test")
    root = Signer(generate())  # one root key Secret, mounted into every replica
    replicas = [
        start_operator(
            kube,
            audit_intake=False,
            register=False,
            watch_fallback=False,
            standalone=False,
            peering_name="auditlock-test",
            priority=priority,
            root_key=root,
        )
        for priority in (10, 20)
    ]
    try:
        create_ready_policy(
            kube, kube_namespace, "peered", file_spec(tmp_path / "trail"), timeout=20
        )
        with kube.api_client() as api:
            peering = client.CustomObjectsApi(api).get_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", "auditlock-test"
            )
        priorities = sorted(p["priority"] for p in (peering.get("status") or {}).values())
        assert priorities == [10, 20]
        for replica in replicas:
            answer = wait_for(
                "the replica's registry has the policy",
                lambda r=replica: (
                    (a := post_pod_review(r.webhook_url, kube, kube_namespace)).get("patch") and a
                ),
            )
            assert answer["allowed"] is True
    finally:
        for replica in replicas:
            replica.stop()
