"""charts/auditlock rendered by the real helm binary (offline): lint, schema validation of
every object for each supported Kubernetes version, and the properties the chart
promises (webhooks, TLS, RBAC, peering, security). No API server is needed here;
tests/integration/test_chart_install.py installs the chart into one."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # via kubernetes-validate
import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from auditlock.policy.model import GROUP
from auditlock.sidecar.config import config_from_dict
from tests.integration.chart_helpers import (
    CHART,
    NAMESPACE,
    RELEASE,
    HelmError,
    by_kind,
    helm,
    named,
    one,
    render,
)

# The Kubernetes versions we support and validate against: native sidecars (1.29) up to
# the newest schemas kubernetes-validate ships offline.
_NEWEST_MINOR = int(kubernetes_validate.latest_version().split(".")[1])
SUPPORTED = [f"1.{minor}" for minor in range(29, _NEWEST_MINOR + 1)]

# Value sets that switch every optional part of the chart on or off.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"tls": {"certManager": {"enabled": True}}},
    "cert-manager-issuer": {
        "tls": {
            "certManager": {"enabled": True, "issuerRef": {"name": "corp", "kind": "ClusterIssuer"}}
        }
    },
    "everything-on": {
        "networkPolicy": {"enabled": True},
        "operator": {"watchFallback": True, "logLevel": "debug"},
        "auditIntake": {"clusterIP": "10.96.0.200", "token": "pinned-token"},
        "clusterName": "prod-eu",
        "collector": {
            "destination": {"url": "s3://trail/cluster", "options": {"region": "eu-west-1"}},
            "credentialsSecret": "trail-s3",
        },
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "podMonitor": {"enabled": True, "namespaces": ["shop"]},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Audit"}},
        },
    },
    "minimal": {
        "operator": {"replicas": 1},
        "peering": {"enabled": False},
        "auditIntake": {"enabled": False},
        "webhook": {"validating": {"enabled": False}},
        "crds": {"install": False},
    },
}

# Kinds that are not built into Kubernetes, validated another way below.
CUSTOM_KINDS = {
    "ClusterKopfPeering",
    "Certificate",
    "Issuer",
    # Prometheus Operator objects: tests/integration/test_chart_monitoring.py.
    "PrometheusRule",
    "ServiceMonitor",
    "PodMonitor",
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest, helm_path: Path) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, render(helm_path, VARIANTS[name])


@pytest.fixture(scope="module")
def default_objects(helm_path: Path) -> list[dict[str, Any]]:
    return render(helm_path)


def _webhooks(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The pod webhooks (injection, enforcement); the AuditAlertRule webhook has its own
    test below."""
    return [
        (config["kind"], hook)
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for config in by_kind(objects, kind)
        for hook in config["webhooks"]
        if hook["rules"][0]["resources"] == ["pods"]
    ]


def test_alert_rules_are_validated_by_the_operator_at_admission(
    default_objects: list[dict[str, Any]],
) -> None:
    from tests.helpers.deploy import operator_routes

    hooks = [
        hook
        for config in by_kind(default_objects, "ValidatingWebhookConfiguration")
        for hook in config["webhooks"]
        if hook["name"] == "validate.auditalertrules.auditlock.io"
    ]
    (hook,) = hooks
    assert hook["failurePolicy"] == "Ignore"
    assert hook["rules"] == [
        {
            "apiGroups": ["auditlock.io"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["auditalertrules"],
            "scope": "Namespaced",
        }
    ]
    assert ("POST", hook["clientConfig"]["service"]["path"]) in operator_routes()
    (pod_hook,) = [h for k, h in _webhooks(default_objects) if k.startswith("Validating")]
    assert hook["clientConfig"]["caBundle"] == pod_hook["clientConfig"]["caBundle"]


# -- lint and schema --------------------------------------------------------------------


@pytest.mark.parametrize("values", ["defaults", "everything-on", "cert-manager"])
def test_helm_lint_strict_is_clean(helm_path: Path, values: str, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(VARIANTS[values]))
    out = helm(helm_path, "lint", "--strict", str(CHART), "--values", str(values_file))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


# What an API server of 1.30 or newer serves, and the chart renders only there.
VAP = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
VAP_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


@pytest.fixture(scope="module")
def all_variants(helm_path: Path) -> dict[str, list[dict[str, Any]]]:
    # Apart from the namespace-label guard (rendered where the API serves it), the chart
    # does not branch on the cluster version, so one render serves every version.
    rendered = {name: render(helm_path, values) for name, values in VARIANTS.items()}
    rendered["defaults+vap"] = render(helm_path, api_versions=(VAP,))
    return rendered


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_object_validates_against_the_kubernetes_schema(
    all_variants: dict[str, list[dict[str, Any]]], version: str
) -> None:
    # Objects identical across variants are validated once (validation is the slow part).
    unique: dict[str, tuple[str, dict[str, Any]]] = {}
    served_vap = int(version.split(".")[1]) >= 30
    for name, objects in all_variants.items():
        for obj in objects:
            if obj["kind"] in CUSTOM_KINDS or (obj["kind"] in VAP_KINDS and not served_vap):
                continue
            unique.setdefault(json.dumps(obj, sort_keys=True), (name, obj))
    assert len(unique) > 25
    for name, obj in unique.values():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']} on {version}: {err}")


def test_chart_does_not_depend_on_the_cluster_version(helm_path: Path) -> None:
    # What makes validating one render per variant against every version sound. Secrets
    # and caBundles are generated afresh on each render, so they are left out.
    generated = {"Secret", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}

    def stable(version: str) -> list[dict[str, Any]]:
        objects = render(helm_path, kube_version=f"{version}.0")
        return [o for o in objects if o["kind"] not in generated]

    assert stable(SUPPORTED[0]) == stable(SUPPORTED[-1])


def test_pod_image_updates_reach_the_webhooks_where_match_conditions_exist(
    helm_path: Path,
) -> None:
    from auditlock.operator.webhook_config import IMAGE_CHANGE_CONDITION

    for _, hook in _webhooks(render(helm_path)):
        assert "matchConditions" not in hook
        assert [r["resources"] for r in hook["rules"]] == [["pods"], ["pods/ephemeralcontainers"]]
    hooks = _webhooks(render(helm_path, api_versions=(VAP,)))
    assert len(hooks) == 2
    for _, hook in hooks:
        assert hook["matchConditions"] == [IMAGE_CHANGE_CONDITION]
        assert hook["rules"][2] == {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }


def test_namespace_label_guard_only_where_the_api_serves_it(helm_path: Path) -> None:
    assert not by_kind(render(helm_path), "ValidatingAdmissionPolicy")
    objects = render(helm_path, api_versions=(VAP,))
    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    (condition,) = policy["spec"]["matchConditions"]
    assert f'"system:serviceaccount:{NAMESPACE}:{account}"' in condition["expression"]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["namespaces"]
    # The RBAC grant it narrows.
    rules = one(objects, "ClusterRole")["rules"]
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch"]} in rules


def test_kopf_peering_object_matches_its_crd(default_objects: list[dict[str, Any]]) -> None:
    crd = next(
        o
        for o in by_kind(default_objects, "CustomResourceDefinition")
        if o["spec"]["group"] == "kopf.dev"
    )
    peering = one(default_objects, "ClusterKopfPeering")
    version = crd["spec"]["versions"][0]
    assert peering["apiVersion"] == f"kopf.dev/{version['name']}"
    assert crd["spec"]["scope"] == "Cluster"
    jsonschema.validate(peering, version["schema"]["openAPIV3Schema"])


def test_values_schema_rejects_bad_values(helm_path: Path) -> None:
    bad: list[dict[str, Any]] = [
        {"webhook": {"timeoutSeconds": 11}},
        {"webhook": {"mutating": {"failurePolicy": "Sometimes"}}},
        {"webhookk": {}},
        {"collector": {"destination": {"url": "ftp://bucket"}}},
        {"image": {"operator": {"digest": "latest"}}},
    ]
    for values in bad:
        with pytest.raises(HelmError, match=r"values don't meet the specifications|schema"):
            render(helm_path, values)


def test_several_replicas_without_peering_are_refused_with_the_reason(helm_path: Path) -> None:
    with pytest.raises(HelmError, match=r"needs peering\.enabled=true"):
        render(helm_path, {"peering": {"enabled": False}})
    objects = render(helm_path, {"peering": {"enabled": False}, "operator": {"replicas": 1}})
    assert one(objects, "Deployment")["spec"]["replicas"] == 1


# -- CRDs -------------------------------------------------------------------------------


def test_crds_are_installed_and_kept(default_objects: list[dict[str, Any]]) -> None:
    crd = next(
        o
        for o in by_kind(default_objects, "CustomResourceDefinition")
        if o["spec"]["group"] == GROUP
    )
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_can_be_left_out(helm_path: Path) -> None:
    objects = render(helm_path, {"crds": {"install": False}}, include_crds=False)
    assert not by_kind(objects, "CustomResourceDefinition")


# -- webhooks ---------------------------------------------------------------------------


def test_webhooks_use_the_service_and_skip_system_namespaces(
    variant: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = variant
    service = named(objects, "Service", "-webhook")
    hooks = _webhooks(objects)
    assert hooks, name
    for kind, hook in hooks:
        ref = hook["clientConfig"]["service"]
        assert ref["name"] == service["metadata"]["name"]
        assert ref["namespace"] == NAMESPACE
        assert ref["port"] == service["spec"]["ports"][0]["port"]
        assert "url" not in hook["clientConfig"]
        assert 1 <= hook["timeoutSeconds"] <= 10
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            },
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["UPDATE"],
                "resources": ["pods/ephemeralcontainers"],
                "scope": "Namespaced",
            },
        ]
        (expr,) = hook["namespaceSelector"]["matchExpressions"]
        assert expr["key"] == "kubernetes.io/metadata.name"
        assert expr["operator"] == "NotIn"
        assert {"kube-system", NAMESPACE} <= set(expr["values"])
        assert "objectSelector" in hook, kind


def test_webhook_paths_are_routes_the_operator_serves(
    default_objects: list[dict[str, Any]],
) -> None:
    from tests.helpers.deploy import operator_routes

    routes = operator_routes()
    for _, hook in _webhooks(default_objects):
        assert ("POST", hook["clientConfig"]["service"]["path"]) in routes
    deployment = one(default_objects, "Deployment")
    operator = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert ("GET", operator[probe]["httpGet"]["path"]) in routes


def test_failure_policies_come_from_values(helm_path: Path) -> None:
    defaults = dict(_webhooks(render(helm_path)))
    assert defaults["MutatingWebhookConfiguration"]["failurePolicy"] == "Ignore"
    assert defaults["ValidatingWebhookConfiguration"]["failurePolicy"] == "Fail"
    flipped = dict(
        _webhooks(
            render(
                helm_path,
                {
                    "webhook": {
                        "mutating": {"failurePolicy": "Fail"},
                        "validating": {"failurePolicy": "Ignore"},
                        "timeoutSeconds": 3,
                    }
                },
            )
        )
    )
    assert flipped["MutatingWebhookConfiguration"]["failurePolicy"] == "Fail"
    assert flipped["ValidatingWebhookConfiguration"]["failurePolicy"] == "Ignore"
    assert {h["timeoutSeconds"] for h in flipped.values()} == {3}


def test_only_the_injection_webhook_honours_the_skip_label(
    default_objects: list[dict[str, Any]],
) -> None:
    hooks = dict(_webhooks(default_objects))
    mutating = hooks["MutatingWebhookConfiguration"]["objectSelector"]
    assert mutating["matchExpressions"] == [
        {"key": "auditlock.io/webhook", "operator": "NotIn", "values": ["skip"]}
    ]
    # A label anyone can set must not switch `enforcement: required` off.
    assert hooks["ValidatingWebhookConfiguration"]["objectSelector"] == {}


def test_enforcement_webhook_selects_only_namespaces_with_a_required_policy(
    default_objects: list[dict[str, Any]],
) -> None:
    from auditlock.operator.names import ENFORCED, LABEL_ENFORCED_NAMESPACE

    hooks = dict(_webhooks(default_objects))
    validating = hooks["ValidatingWebhookConfiguration"]["namespaceSelector"]
    assert validating["matchLabels"] == {LABEL_ENFORCED_NAMESPACE: ENFORCED}
    assert "matchLabels" not in hooks["MutatingWebhookConfiguration"]["namespaceSelector"]


def test_extra_namespaces_and_labels_narrow_both_webhooks(helm_path: Path) -> None:
    objects = render(
        helm_path,
        {"webhook": {"excludeNamespaces": ["monitoring"], "namespaceMatchLabels": {"audit": "on"}}},
    )
    for kind, hook in _webhooks(objects):
        labels = hook["namespaceSelector"]["matchLabels"]
        assert labels.items() >= {"audit": "on"}.items(), kind
        values = hook["namespaceSelector"]["matchExpressions"][0]["values"]
        assert set(values) == {
            "kube-system",
            "kube-public",
            "kube-node-lease",
            NAMESPACE,
            "monitoring",
        }


# -- TLS --------------------------------------------------------------------------------


def test_generated_tls_is_a_ca_signed_cert_for_the_services(
    default_objects: list[dict[str, Any]],
) -> None:
    secret = next(s for s in by_kind(default_objects, "Secret") if s["type"] == "kubernetes.io/tls")
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = set(
        cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    )
    for service in by_kind(default_objects, "Service"):
        assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in names
    for _, hook in _webhooks(default_objects):
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_pem
    deployment = one(default_objects, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == secret["metadata"]["name"]


def test_a_fixed_audit_ip_is_in_the_certificate(helm_path: Path) -> None:
    # The API server calls the audit intake by IP (no cluster DNS on its node).
    objects = render(helm_path, {"auditIntake": {"clusterIP": "10.96.0.200"}})
    secret = next(s for s in by_kind(objects, "Secret") if s["type"] == "kubernetes.io/tls")
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.96.0.200"]
    managed = render(
        helm_path,
        {"auditIntake": {"clusterIP": "10.96.0.200"}, "tls": {"certManager": {"enabled": True}}},
    )
    serving = next(c for c in by_kind(managed, "Certificate") if not c["spec"].get("isCA"))
    assert serving["spec"]["ipAddresses"] == ["10.96.0.200"]


def test_cert_manager_issues_the_same_secret_and_injects_the_ca(helm_path: Path) -> None:
    objects = render(helm_path, VARIANTS["cert-manager"])
    assert not [s for s in by_kind(objects, "Secret") if s["type"] == "kubernetes.io/tls"]
    certificates = {c["metadata"]["name"]: c for c in by_kind(objects, "Certificate")}
    serving = certificates[f"{RELEASE}-auditlock"]
    assert serving["spec"]["secretName"] == f"{RELEASE}-auditlock-webhook-tls"
    assert f"{RELEASE}-auditlock-webhook.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    # Self-bootstrapped CA: selfSigned Issuer -> CA Certificate -> CA Issuer -> serving.
    issuers = {i["metadata"]["name"]: i["spec"] for i in by_kind(objects, "Issuer")}
    assert serving["spec"]["issuerRef"] == {"name": f"{RELEASE}-auditlock-ca", "kind": "Issuer"}
    assert issuers[f"{RELEASE}-auditlock-ca"] == {"ca": {"secretName": f"{RELEASE}-auditlock-ca"}}
    assert certificates[f"{RELEASE}-auditlock-ca"]["spec"]["isCA"] is True
    configs = [
        config
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for config in by_kind(objects, kind)
    ]
    assert len(configs) == 3  # injection, enforcement, AuditAlertRule validation
    for config in configs:
        annotation = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == f"{NAMESPACE}/{RELEASE}-auditlock"
        assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])


def test_cert_manager_with_an_existing_issuer_creates_no_ca(helm_path: Path) -> None:
    objects = render(helm_path, VARIANTS["cert-manager-issuer"])
    assert not by_kind(objects, "Issuer")
    serving = one(objects, "Certificate")
    assert serving["spec"]["issuerRef"] == {"name": "corp", "kind": "ClusterIssuer"}


# -- RBAC -------------------------------------------------------------------------------


def test_rbac_has_no_wildcards_and_binds_the_service_account(
    variant: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = variant
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), f"{name}: wildcard in {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_secret_list_watch_only_with_the_watch_fallback(helm_path: Path) -> None:
    def secret_verbs(values: dict[str, Any]) -> set[str]:
        role = one(render(helm_path, values), "ClusterRole")
        return {v for r in role["rules"] if "secrets" in r["resources"] for v in r["verbs"]}

    assert secret_verbs({}) == {"get", "create", "patch", "delete"}
    assert secret_verbs({"operator": {"watchFallback": True}}) == {
        "get",
        "create",
        "patch",
        "delete",
        "list",
        "watch",
    }


# -- the operator Deployment ------------------------------------------------------------


def test_operator_runs_with_peering_and_its_mounted_tls(
    default_objects: list[dict[str, Any]],
) -> None:
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    operator = pod["containers"][0]
    args = operator["args"]
    assert args[:2] == ["operator", "run"]
    peering = one(default_objects, "ClusterKopfPeering")["metadata"]["name"]
    assert f"--peering={peering}" in args
    # Replicas need distinct peering priorities, or kopf pauses them all.
    assert "--priority=random" in args
    assert "--tls-cert-file=/var/run/auditlock/tls/tls.crt" in args
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        operator["env"]
    )
    # The arguments parse with the real CLI.
    from auditlock.cli.main import build_parser

    parsed = build_parser().parse_args(args)
    assert parsed.peering == peering
    assert parsed.priority == "random"
    assert parsed.webhook_port == operator["ports"][0]["containerPort"]


def test_without_peering_the_operator_runs_standalone(helm_path: Path) -> None:
    objects = render(helm_path, VARIANTS["minimal"])
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--peering")]
    assert not by_kind(objects, "ClusterKopfPeering")


def test_containers_are_locked_down(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = variant
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"]["memory"]


def test_signing_key_is_mounted_into_the_collector_only(
    default_objects: list[dict[str, Any]],
) -> None:
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    mounts = {name: {m["name"] for m in c["volumeMounts"]} for name, c in containers.items()}
    assert "collector-key" in mounts["collector"]
    assert "collector-key" not in mounts["operator"]
    assert "tls" not in mounts["collector"]


def test_collector_config_is_a_valid_sidecar_config(
    variant: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = variant
    config_map = named(objects, "ConfigMap", "-collector")
    raw = yaml.safe_load(config_map["data"]["sidecar.yaml"])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    collector = next(c for c in pod["containers"] if c["name"] == "collector")
    # The downward-API overrides, expanded as the kubelet would for pod auditlock-x, and
    # the cluster name as the operator publishes it in its ConfigMap.
    values = {
        "POD_NAME": "auditlock-x",
        "POD_NAMESPACE": NAMESPACE,
        "NODE_NAME": "node-1",
        "AUDITLOCK_CLUSTER_NAME": "uid-0123456789ab",
    }
    environ: dict[str, str] = {}
    for env in collector["env"]:
        if "value" in env:
            value = env["value"]
            for key, val in values.items():
                value = value.replace(f"$({key})", val)
            environ[env["name"]] = value
    config = config_from_dict(raw, environ, where=name)
    assert config.stream.id == f"uid-0123456789ab_{NAMESPACE}_auditlock-x"
    assert config.source.cluster == "uid-0123456789ab"
    assert str(config.stream.signing_key_file).startswith(
        next(m["mountPath"] for m in collector["volumeMounts"] if m["name"] == "collector-key")
    )
    operator_args = pod["containers"][0]["args"]
    # Audit batches go to the collector's HTTP intake on loopback (202 only after fsync).
    assert config.sources.http.enabled and config.sources.http.host == "127.0.0.1"
    assert f"--collector=127.0.0.1:{config.sources.http.port}" in operator_args
    from auditlock.cli.main import build_parser

    # The image's PATH resolves `auditlock`; the rest must be a command the CLI accepts.
    assert collector["command"][0] == "auditlock"
    parsed = build_parser().parse_args(collector["command"][1:])
    assert Path(parsed.config).name in config_map["data"]
    assert config.health.port == collector["ports"][0]["containerPort"]
    expected = VARIANTS[name].get("collector", {}).get("destination", {}).get("url")
    assert config.destination.url == (expected or "file:///var/lib/auditlock/ledger")
    from auditlock.operator.sidecar_config import spool_sizes

    limit = VARIANTS[name].get("collector", {}).get("spoolLimitMiB", 256)
    sizes = spool_sizes(limit)  # the chart sizes its own collector's spool like the operator
    assert (config.spool.max_bytes, config.spool.segment_bytes) == (
        sizes["max_bytes"],
        sizes["segment_bytes"],
    )


def test_audit_token_reaches_the_operator(helm_path: Path) -> None:
    objects = render(helm_path, VARIANTS["everything-on"])
    token = named(objects, "Secret", "-audit-token")
    assert base64.b64decode(token["data"]["token"]) == b"pinned-token"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["audit-token"]["secret"]["secretName"] == token["metadata"]["name"]
    assert "--audit-token-file=/var/run/auditlock/audit-token/token" in pod["containers"][0]["args"]
    audit = named(objects, "Service", "-audit")
    assert audit["spec"]["clusterIP"] == "10.96.0.200"
    assert audit["spec"]["ports"][0]["targetPort"] == "webhook"


def test_generated_secrets_are_fresh_per_render_but_well_formed(helm_path: Path) -> None:
    from auditlock.ledger.keys import load_private_key

    first, second = render(helm_path), render(helm_path)

    def key(objects: list[dict[str, Any]]) -> bytes:
        secret = named(objects, "Secret", "-collector-key")
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        return base64.b64decode(secret["data"]["ed25519.pem"])

    load_private_key(key(first))
    assert key(first) != key(second), "helm template cannot look up; install keeps them"


# -- PDB, NetworkPolicy, NOTES ----------------------------------------------------------


def test_replicas_are_kept_available_by_a_pdb(default_objects: list[dict[str, Any]]) -> None:
    deployment = one(default_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pdb = one(default_objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    # Rollouts start the new pod before stopping an old one: the webhooks stay served.
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxUnavailable": 0, "maxSurge": 1}
    # Replicas prefer different nodes.
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_no_pdb_over_a_single_replica(helm_path: Path) -> None:
    # It would block every node drain.
    objects = render(helm_path, {"operator": {"replicas": 1}})
    assert not by_kind(objects, "PodDisruptionBudget")
    assert not by_kind(
        render(helm_path, {"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget"
    )


def test_network_policy_admits_only_the_served_ports(helm_path: Path) -> None:
    assert not by_kind(render(helm_path), "NetworkPolicy")
    objects = render(helm_path, VARIANTS["everything-on"])
    policy = one(objects, "NetworkPolicy")
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    named = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
    assert ports == named == {"webhook", "metrics", "collector"}
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == (one(objects, "Deployment")["spec"]["selector"]["matchLabels"])
    )


def test_every_values_key_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load("\n".join(lines))

    def walk(node: dict[str, Any], schema_node: dict[str, Any], path: str) -> None:
        props = schema_node.get("properties", {})
        for key, value in node.items():
            assert key in props, f"{path}{key} is not in values.schema.json"
            if isinstance(value, dict) and props[key].get("properties"):
                walk(value, props[key], f"{path}{key}.")
            else:
                assert props[key].get("description"), f"{path}{key} has no schema description"

    walk(values, schema, "")


def test_every_value_in_values_yaml_has_a_comment() -> None:
    """Each setting has a comment right above it, or sits inside a block of plain data
    (resources, securityContext) whose key has one."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-"):
            continue
        level = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= level:
            stack.pop()
        commented = index > 0 and lines[index - 1].strip().startswith("#")
        documented = commented or any(doc for _, doc in stack)
        if stripped.endswith(":"):
            stack.append((level, documented))
        elif not documented:
            undocumented.append(f"values.yaml:{index + 1}: {stripped}")
    assert not undocumented, "\n".join(undocumented)


# -- cluster identity --------------------------------------------------------------------


def test_the_collector_beside_the_operator_takes_the_operators_cluster_name(
    helm_path: Path,
) -> None:
    for values, flag in (({}, None), ({"clusterName": "prod-eu"}, "--cluster-name=prod-eu")):
        objects = render(helm_path, values)
        deployment = one(objects, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        args = containers["operator"]["args"]
        published = f"{RELEASE}-auditlock-cluster"
        assert f"--cluster-identity-configmap={NAMESPACE}/{published}" in args
        assert (flag in args) if flag else not any(a.startswith("--cluster-name") for a in args)
        env = containers["collector"]["env"]
        names = [e["name"] for e in env]
        by_name = {e["name"]: e for e in env}
        assert by_name["AUDITLOCK_CLUSTER_NAME"]["valueFrom"]["configMapKeyRef"] == {
            "name": published,
            "key": "clusterName",
        }
        # $(VAR) expands only variables defined earlier in the list.
        assert names.index("AUDITLOCK_CLUSTER_NAME") < names.index("AUDITLOCK_SIDECAR__STREAM__ID")
        assert by_name["AUDITLOCK_SIDECAR__STREAM__ID"]["value"] == (
            "$(AUDITLOCK_CLUSTER_NAME)_$(POD_NAMESPACE)_$(POD_NAME)"
        )
        assert by_name["AUDITLOCK_SIDECAR__SOURCE__CLUSTER"]["value"] == "$(AUDITLOCK_CLUSTER_NAME)"
    with pytest.raises(HelmError):
        render(helm_path, {"clusterName": "prod_eu"})  # "_" separates stream id parts


# -- continuous verification --------------------------------------------------------------

VERIFY = {"verify": {"schedule": "17 * * * *", "namespaces": ["shop"],
                     "credentialsSecret": "trail-read"}}  # fmt: skip


def test_no_verification_cronjob_unless_scheduled(default_objects: list[dict[str, Any]]) -> None:
    assert not by_kind(default_objects, "CronJob")


def test_verification_cronjob_is_locked_down_with_its_own_least_privilege_account(
    helm_path: Path,
) -> None:
    from auditlock.cli.main import build_parser

    objects = render(helm_path, VERIFY)
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, SUPPORTED[-1], strict=True)
    job = one(objects, "CronJob")
    assert job["spec"]["schedule"] == "17 * * * *"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"]
    assert container["envFrom"] == [{"secretRef": {"name": "trail-read"}}]
    parsed = build_parser().parse_args(container["args"])
    assert parsed.func.__module__ == "auditlock.cli.verify_policies"
    assert parsed.namespace == ["shop"]
    # Its own ServiceAccount, bound to a role that reads policies and patches their
    # status: nothing else (no Secrets, no other writes).
    account = pod["serviceAccountName"]
    operator_account = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert account != operator_account
    binding = next(b for b in by_kind(objects, "ClusterRoleBinding")
                   if b["subjects"][0]["name"] == account)  # fmt: skip
    role = next(r for r in by_kind(objects, "ClusterRole")
                if r["metadata"]["name"] == binding["roleRef"]["name"])  # fmt: skip
    grants = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
              for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    assert grants == {
        (GROUP, "auditpolicies", "get"),
        (GROUP, "auditpolicies", "list"),
        (GROUP, "auditpolicies/status", "patch"),
    }


def test_the_witness_runs_with_the_operator_key_and_the_verification_checks_it(
    helm_path: Path,
) -> None:
    """The operator witnesses with the key its own stream is signed with, read through the
    API (never mounted); verify.witnessPublicKey reaches the CronJob as --witness-key."""
    from auditlock.cli.main import build_parser
    from auditlock.ledger.keys import generate, load_public_key, public_pem

    pem = public_pem(generate().public_key()).decode()
    values = {**VERIFY, "verify": {**VERIFY["verify"], "witnessPublicKey": pem},
              "witness": {"intervalSeconds": 30, "tsaUrl": "http://tsa.example/ts"}}  # fmt: skip
    objects = render(helm_path, values)
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, SUPPORTED[-1], strict=True)
    operator = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    run = build_parser().parse_args(operator["args"])
    _, _, secret = run.witness_key_secret.partition("/")
    key_secret = next(s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == secret)
    assert "ed25519.pem" in key_secret["data"]
    assert (run.witness_seconds, run.witness_tsa_url) == (30, "http://tsa.example/ts")
    assert not [m for m in operator.get("volumeMounts", []) if secret in str(m)]
    pod = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (path,) = build_parser().parse_args(container["args"]).witness_key
    mount = next(m for m in container["volumeMounts"] if str(path).startswith(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config = next(c for c in by_kind(objects, "ConfigMap")
                  if c["metadata"]["name"] == volume["configMap"]["name"])  # fmt: skip
    assert load_public_key(config["data"][path.name].encode()) is not None
    off = one(render(helm_path, {"witness": {"enabled": False}}), "Deployment")
    assert "--witness-key-secret" not in str(off["spec"]["template"]["spec"]["containers"])
