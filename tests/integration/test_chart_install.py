"""`helm install` of charts/auditlock into the real test API server: every object is
created, NOTES tell the admin what to run next, an upgrade keeps the generated CA,
signing key and audit token, and the examples are valid against the installed CRD."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.chart_helpers import RELEASE, InstalledRelease, install_release, render
from tests.servers.kube_controlplane import KubeControlPlane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def kubectl_json(kube: KubeControlPlane, *args: str) -> dict[str, Any]:
    out = kube.kubectl(*args, "-o", "yaml").stdout
    data: dict[str, Any] = yaml.safe_load(out)
    return data


def read_object(kube: KubeControlPlane, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    kind = obj["kind"]
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    resource = f"{kind.lower()}.{group}" if group else kind.lower()
    args = ["get", resource, obj["metadata"]["name"]]
    if obj["metadata"].get("namespace"):
        args += ["-n", namespace]
    return kubectl_json(kube, *args)


def secret_data(kube: KubeControlPlane, namespace: str, name: str) -> dict[str, str]:
    data: dict[str, str] = kubectl_json(kube, "get", "secret", "-n", namespace, name)["data"]
    return data


def test_install_creates_every_object(chart_release: InstalledRelease) -> None:
    kube, namespace = chart_release.kube, chart_release.namespace
    manifest = chart_release.manifest()
    kinds = {o["kind"] for o in manifest}
    assert kinds >= {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Secret",
        "ConfigMap",
        "ClusterKopfPeering",
        "PodDisruptionBudget",
    }
    for obj in manifest:
        stored = read_object(kube, obj, namespace)
        assert stored["metadata"]["name"] == obj["metadata"]["name"]
        labels = stored["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "auditlock", obj["kind"]
    # Helm's crds/ folder (kopf's peering CRD) is applied too, before the templates.
    kopf_crd = kubectl_json(kube, "get", "crd", "clusterkopfpeerings.kopf.dev")
    assert kopf_crd["spec"]["group"] == "kopf.dev"
    # The AuditPolicy CRD is served: the API knows the kind and its printer columns.
    crd = kubectl_json(kube, "get", "crd", "auditpolicies.auditlock.io")
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established["Established"] == "True"


def test_install_prints_the_next_command(chart_release: InstalledRelease) -> None:
    notes = chart_release.install_output
    deployment = f"{RELEASE}-auditlock"
    assert f"kubectl -n {chart_release.namespace} rollout status deployment/{deployment}" in notes
    assert "kubectl apply -n <app-namespace> -f examples/auditpolicy-s3.yaml" in notes
    assert "auditlock verify" in notes
    # Defaults that deserve a warning get one.
    assert "collector.destination.url is empty" in notes
    assert "fails closed" in notes


def test_webhooks_carry_the_ca_of_the_served_certificate(chart_release: InstalledRelease) -> None:
    kube, namespace = chart_release.kube, chart_release.namespace
    tls = secret_data(kube, namespace, f"{RELEASE}-auditlock-webhook-tls")
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        name = f"{RELEASE}-auditlock-{namespace}"
        config = kubectl_json(kube, "get", kind, name)
        for hook in config["webhooks"]:
            assert hook["clientConfig"]["caBundle"] == tls["ca.crt"]
            assert hook["clientConfig"]["service"]["namespace"] == namespace


def test_upgrade_keeps_certificate_key_and_token(chart_release: InstalledRelease) -> None:
    kube, namespace = chart_release.kube, chart_release.namespace
    names = [
        f"{RELEASE}-auditlock-webhook-tls",
        f"{RELEASE}-auditlock-collector-key",
        f"{RELEASE}-auditlock-audit-token",
        f"{RELEASE}-auditlock-root-key",  # certifies every per-pod key: never replaced
    ]
    before = {name: secret_data(kube, namespace, name) for name in names}
    values = dict(chart_release.values)
    values["webhook"] = {**values["webhook"], "timeoutSeconds": 4}
    chart_release.upgrade(values)
    after = {name: secret_data(kube, namespace, name) for name in names}
    assert after == before
    config = kubectl_json(
        kube, "get", "mutatingwebhookconfiguration", f"{RELEASE}-auditlock-{namespace}"
    )
    hook = config["webhooks"][0]
    assert hook["timeoutSeconds"] == 4, "the upgrade did apply"
    assert hook["clientConfig"]["caBundle"] == before[names[0]]["ca.crt"]
    # A fresh render (no cluster to look up) would have made a different CA: the lookup
    # is what kept it.
    fresh = render(chart_release.helm_path, values, namespace=namespace)
    fresh_tls = next(o for o in fresh if o["metadata"]["name"] == names[0])
    assert fresh_tls["data"]["ca.crt"] != before[names[0]]["ca.crt"]


def test_operator_identity_is_the_bound_service_account(chart_release: InstalledRelease) -> None:
    kube, namespace = chart_release.kube, chart_release.namespace
    account = chart_release.service_account()
    user = f"system:serviceaccount:{namespace}:{account}"

    def can(verb: str, resource: str, *extra: str) -> bool:
        result = kube.kubectl("auth", "can-i", verb, resource, "--as", user, *extra, check=False)
        return result.stdout.strip() == "yes"

    assert can("patch", "auditpolicies.auditlock.io", "-A")
    assert can("create", "secrets", "-n", "default")
    assert can("watch", "pods", "-A")
    assert can("patch", "namespaces")
    # What it must not do, for example:
    assert not can("list", "secrets", "-A"), "secret listing only with watchFallback"
    assert not can("update", "secrets", "-n", "default")
    assert not can("create", "pods", "-n", "default")
    assert not can("delete", "auditpolicies.auditlock.io", "-A")
    assert not can("create", "clusterrolebindings")


def test_operator_may_change_only_the_enforcement_label_of_a_namespace(
    chart_release: InstalledRelease,
) -> None:
    """RBAC grants namespace patch; the chart's ValidatingAdmissionPolicy narrows it to
    the one label the operator sets."""
    from auditlock.operator.names import ENFORCED, LABEL_ENFORCED_NAMESPACE

    kube = chart_release.kube
    installed = {o["kind"] for o in chart_release.manifest()}
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= installed
    target = kube.create_namespace()
    user = f"system:serviceaccount:{chart_release.namespace}:{chart_release.service_account()}"
    try:

        def label(*args: str) -> subprocess.CompletedProcess[str]:
            return kube.kubectl("label", "namespace", target, *args, "--as", user, check=False)

        # The policy needs a moment to be loaded by the API server after install.
        deadline = time.monotonic() + 20
        while True:
            refused = label("pod-security.kubernetes.io/enforce=privileged")
            if refused.returncode != 0 or time.monotonic() > deadline:
                break
            label("pod-security.kubernetes.io/enforce-")  # undo, try again
            time.sleep(0.5)
        assert refused.returncode != 0
        assert "may change only the auditlock.io/enforcement label" in refused.stderr
        assert label(f"{LABEL_ENFORCED_NAMESPACE}={ENFORCED}").returncode == 0
        wrong = label("--overwrite", f"{LABEL_ENFORCED_NAMESPACE}=off")
        assert wrong.returncode != 0 and 'may only be set to "required"' in wrong.stderr
        annotated = kube.kubectl("annotate", "namespace", target, "x=y", "--as", user, check=False)
        assert annotated.returncode != 0 and "annotations or spec" in annotated.stderr
        assert label(f"{LABEL_ENFORCED_NAMESPACE}-").returncode == 0
        # Anyone else (here: admin) is not affected by the guard.
        assert kube.kubectl("label", "namespace", target, "team=a").returncode == 0
    finally:
        kube.delete_namespace(target)


@pytest.mark.parametrize(
    "path",
    sorted(EXAMPLES.rglob("*.yaml")),
    ids=lambda p: p.relative_to(EXAMPLES).as_posix(),
)
def test_examples_pass_server_side_validation(
    chart_release: InstalledRelease, path: Path, tmp_path: Path
) -> None:
    # --dry-run=server: full validation by the API server (the CRD's schema for
    # AuditPolicies), nothing stored.
    kube = chart_release.kube
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "Service" and doc["spec"].get("clusterIP"):
            # kind's service range is 10.96.0.0/16, the test API server's 10.0.0.0/24.
            doc["spec"]["clusterIP"] = "10.0.0.201"
    path = tmp_path / path.name
    path.write_text(yaml.safe_dump_all(docs))
    fixed = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    # Objects that name their own namespace are applied there; it must exist for a dry
    # run, so it is created for the test and deleted after.
    for name in fixed:
        kube.create_namespace(name)
    try:
        args = ["apply", "--dry-run=server", "-f", str(path)]
        if not fixed:
            args += ["-n", chart_release.namespace]
        result = kube.kubectl(*args, check=False)
    finally:
        for name in fixed:
            kube.delete_namespace(name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)


def test_an_invalid_policy_is_refused_by_the_installed_schema(
    chart_release: InstalledRelease, tmp_path: Path
) -> None:
    policy = yaml.safe_load((EXAMPLES / "auditpolicy-s3.yaml").read_text())
    policy["spec"]["destination"]["file"] = {"path": "/tmp/x"}  # two destinations
    policy["spec"]["retention"]["days"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(policy))
    result = chart_release.kube.kubectl(
        "apply", "--dry-run=server", "-n", chart_release.namespace, "-f", str(bad), check=False
    )
    assert result.returncode != 0
    assert "spec.destination" in result.stderr
    assert "spec.retention.days" in result.stderr


def test_uninstall_leaves_the_crd_policies_and_key(
    kube_apiserver: KubeControlPlane, helm_path: Path
) -> None:
    """The keep annotations: uninstalling the chart must not delete every AuditPolicy
    (with the CRD) nor the operator collector's signing key."""
    releases = install_release(kube_apiserver, helm_path)
    release = next(releases)
    namespace = release.namespace
    policy_file = str(EXAMPLES / "auditpolicy-file.yaml")
    try:
        kube_apiserver.kubectl("apply", "-n", namespace, "-f", policy_file)
        release.uninstall()
        assert kubectl_json(kube_apiserver, "get", "crd", "auditpolicies.auditlock.io")
        policy = kubectl_json(kube_apiserver, "get", "auditpolicy", "-n", namespace, "dev-trail")
        assert policy["spec"]["retention"]["days"] == 1
        assert secret_data(kube_apiserver, namespace, f"{RELEASE}-auditlock-collector-key")
        assert secret_data(kube_apiserver, namespace, f"{RELEASE}-auditlock-root-key")
        # Everything else of the release is gone, cluster-scoped objects included.
        for kind in (
            "clusterrole",
            "clusterrolebinding",
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ):
            gone = kube_apiserver.kubectl(
                "get", kind, f"{RELEASE}-auditlock-{namespace}", check=False
            )
            assert gone.returncode != 0 and "NotFound" in gone.stderr, kind
        assert (
            kube_apiserver.kubectl(
                "get", "deployment", "-n", namespace, f"{RELEASE}-auditlock", check=False
            ).returncode
            != 0
        )
    finally:
        # No operator ran, so no finalizer: the policy goes at once and later operators
        # in this shared API server never see it.
        kube_apiserver.kubectl("delete", "-n", namespace, "-f", policy_file, check=False)
        next(releases, None)
