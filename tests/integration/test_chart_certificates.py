"""The chart's per-pod key settings (values `certificates.*`), rendered by the real helm
binary: a root key is there by default (generated and kept, or brought), mounted into the
operator alone, and the ClusterRole holds what certifying needs (docs/operator.md,
"Per-pod keys"), which is enough on the real kube-apiserver."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from auditlock.ledger.keys import Signer, generate, load_private_key
from auditlock.operator.certificates import CertificateIssuer, Issued
from auditlock.operator.kube import Kube
from auditlock.operator.reconcile import entry_for
from auditlock.operator.registry import PolicyRegistry
from tests.helpers.certificates import collector_running, pod_token, request_body
from tests.helpers.policies import create_pod, file_spec
from tests.integration.chart_helpers import NAMESPACE, HelmError, one, render
from tests.servers.kube_controlplane import KubeControlPlane


def _rules(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    role = one(objects, "ClusterRole")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# What certifying needs beyond the rest of the operator's work (docs/operator.md,
# "Per-pod keys"): check a token, and read the pod it names.
ISSUER_RULES = {("authentication.k8s.io", "tokenreviews", "create"), ("", "pods", "get")}


def _root_volume(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    mounted = [c["name"] for c in pod["containers"]
               if any(m["name"] == "root-key" for m in c.get("volumeMounts", []))]  # fmt: skip
    assert mounted == ["operator"]
    volume: dict[str, Any] = next(v for v in pod["volumes"] if v["name"] == "root-key")
    return volume


def test_a_root_key_is_generated_by_default_and_mounted_into_the_operator_alone(
    helm_path: Path,
) -> None:
    """Per-pod keys are the policies' default, so every install has a root key: one the
    chart generates and keeps, or the Secret `certificates.rootKeySecret` names."""
    plain = render(helm_path)
    [generated] = [o for o in plain if o["kind"] == "Secret"
                   and o["metadata"]["name"].endswith("-root-key")]  # fmt: skip
    assert generated["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    load_private_key(base64.b64decode(generated["data"]["signing.key"]))
    assert _root_volume(plain)["secret"] == {
        "secretName": generated["metadata"]["name"],
        "defaultMode": 0o400,
    }
    assert _rules(plain) >= ISSUER_RULES
    objects = render(helm_path, {"certificates": {"rootKeySecret": "auditlock-root"}})
    assert not [o for o in objects if o["kind"] == "Secret"
                and o["metadata"]["name"].endswith("-root-key")]  # fmt: skip
    assert _root_volume(objects)["secret"] == {"secretName": "auditlock-root", "defaultMode": 0o400}
    assert _rules(objects) == _rules(plain)
    operator = next(c for c in one(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"] if c["name"] == "operator")  # fmt: skip
    args = operator["args"]
    assert "--root-key-file=/var/run/auditlock/root-key/signing.key" in args
    assert any(a.startswith("--certificate-url=https://") and
               a.endswith(f".{NAMESPACE}.svc:443/v1/certificates") for a in args)  # fmt: skip


def test_a_bad_certificate_setting_is_refused_by_the_schema(helm_path: Path) -> None:
    with pytest.raises(HelmError):
        render(helm_path, {"certificates": {"validitySeconds": 10}})


def test_those_rules_are_all_the_issuer_needs(
    helm_path: Path, kube_apiserver: KubeControlPlane, tmp_path: Path
) -> None:
    """The issuer, authenticated as a ServiceAccount granted exactly the rules the chart
    has for it, certifies a pod's key on the real API server; without them it cannot."""
    kube = kube_apiserver
    added = ISSUER_RULES & _rules(render(helm_path))
    assert added == ISSUER_RULES
    namespace = kube.create_namespace()
    role = f"auditlock-certificates-{namespace}"
    with kube.api_client() as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        for account in ("issuer", "nobody"):
            core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
        rbac.create_cluster_role({"metadata": {"name": role}, "rules": [
            {"apiGroups": [g], "resources": [r], "verbs": [v]} for g, r, v in sorted(added)
        ]})  # fmt: skip
        rbac.create_cluster_role_binding({
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "issuer", "namespace": namespace}],
        })  # fmt: skip
    try:
        registry = PolicyRegistry()
        registry.put(entry_for({
            "metadata": {"namespace": namespace, "name": "trail"},
            "spec": file_spec(tmp_path / "store", signing="perPod"),
        }, "c"))  # fmt: skip
        pod = create_pod(kube, namespace, {"app": "payments"})
        collector_running(kube, pod)
        request = request_body(Signer(generate()), f"c_{namespace}_{pod['metadata']['name']}")
        bearer = f"Bearer {pod_token(kube, pod)}"

        def issue(account: str) -> Issued:
            token = kube.service_account_token(namespace, account)
            issuer = CertificateIssuer(
                root=Signer(generate()),
                kube=Kube(kube.api_client(token=token)),
                registry=registry,
                cluster="c",
            )
            return asyncio.run(issuer.issue(bearer, request))

        assert issue("issuer").name.startswith("keys/certs/")
        with pytest.raises(client.ApiException) as refused:
            issue("nobody")
        assert refused.value.status == 403
    finally:
        with kube.api_client() as api:
            rbac = client.RbacAuthorizationV1Api(api)
            rbac.delete_cluster_role_binding(role)
            rbac.delete_cluster_role(role)
        kube.delete_namespace(namespace)
