"""The operator's alerting against real parts: the real kube-apiserver's audit webhook
feeds the operator, which evaluates the built-in security rules and an AuditAlertRule,
delivers to a real Alertmanager and posts Kubernetes Events on the real API server, and
records every alert as an event in its collector's signed trail, which verifies. The
trail watcher reads a killed collector's stream from the destination and alerts.

One operator, one collector and one round of requests for the module (`alerting`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditlock.operator.alerting import AlertSettings
from tests.helpers.kube_api import Api
from tests.helpers.policies import create_pod, file_spec
from tests.helpers.trail import stored_events as ledger_events
from tests.servers.alertmanager import Alertmanager
from tests.servers.auditlock_operator import (
    RunningOperator,
    label_namespace,
    operator_collector_process,
    remove_policy,
    start_operator,
)
from tests.servers.kube_controlplane import KubeControlPlane
from tests.servers.sidecar import cli_verify, make_config, sidecar_process, wait_for

RBAC = "/apis/rbac.authorization.k8s.io/v1"
OK = (200, 201)


@dataclass
class Alerting:
    operator: RunningOperator
    alertmanager: Alertmanager
    api: Api
    namespace: str
    pod: str
    store: Path
    policy_dir: Path
    editor: str  # the ServiceAccount that changes the policy
    nobody: str  # the ServiceAccount refused five times


def _sa_token(kube: KubeControlPlane, api: Api, ns: str, name: str) -> str:
    assert (
        api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": name}})[0]
        in OK
    )
    return kube.service_account_token(ns, name)


@pytest.fixture(scope="module")
def alerting(
    auditpolicy_crd: KubeControlPlane,
    alertmanager: Alertmanager,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Alerting]:
    kube = auditpolicy_crd
    settings = AlertSettings(
        alertmanager_url=alertmanager.url,
        own_identities=("admin",),  # the rig's operator runs as admin
        watch_seconds=1.0,
        tick_seconds=0.5,
        builtin_resolve_seconds=10.0,
    )
    running = start_operator(kube, alerts=settings)
    api = Api(kube)
    ns = label_namespace(kube, kube.create_namespace())
    workdir = tmp_path_factory.mktemp("alerting")
    policy_dir = workdir / "app-trail"
    try:
        with operator_collector_process(running.collector_port, workdir) as store:
            policy = {"apiVersion": "auditlock.io/v1alpha1", "kind": "AuditPolicy",
                      "metadata": {"name": "capture"}, "spec": file_spec(policy_dir)}  # fmt: skip
            path = f"/apis/auditlock.io/v1alpha1/namespaces/{ns}/auditpolicies"
            assert api("POST", path, policy)[0] in OK
            wait_for(lambda: ns in running.thread.policies.namespaces(), 15, "the policy")
            editor = _sa_token(kube, api, ns, "editor")
            nobody = _sa_token(kube, api, ns, "nobody")
            role = {"metadata": {"name": "policy-editor"},
                    "rules": [{"apiGroups": ["auditlock.io"], "resources": ["auditpolicies"],
                               "verbs": ["get", "patch"]}]}  # fmt: skip
            assert api("POST", f"{RBAC}/namespaces/{ns}/roles", role)[0] in OK
            binding = {"metadata": {"name": "policy-editor"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                   "name": "policy-editor"},
                       "subjects": [{"kind": "ServiceAccount", "name": "editor",
                                     "namespace": ns}]}  # fmt: skip
            assert api("POST", f"{RBAC}/namespaces/{ns}/rolebindings", binding)[0] in OK
            pod = create_pod(kube, ns, {"app": "payments"})["metadata"]["name"]
            yield Alerting(running, alertmanager, api, ns, pod, store, policy_dir, editor, nobody)
            remove_policy(kube, ns, "capture")
        result = cli_verify(f"file://{store}", workdir / "ed25519.pub.pem")
        assert result is None or result.returncode == 0, (result.stdout, result.stderr)
    finally:
        running.stop()


def _alert(alerting: Alerting, status: str = "firing", **labels: str) -> dict[str, Any]:
    return alerting.alertmanager.receiver.wait_for_alert(
        status, timeout=30, namespace=alerting.namespace, **labels
    )


def _kube_events(alerting: Alerting, kind: str, name: str) -> list[dict[str, Any]]:
    found = alerting.operator.kube.get_json(f"/api/v1/namespaces/{alerting.namespace}/events")
    return [
        e
        for e in found["items"]
        if e["involvedObject"].get("kind") == kind
        and e["involvedObject"].get("name") == name
        and e.get("reason") in ("AlertFired", "AlertResolved")
    ]


def test_builtin_security_rules_reach_alertmanager_with_their_labels(alerting: Alerting) -> None:
    api, ns, pod = alerting.api, alerting.namespace, alerting.pod
    assert api("POST", f"/api/v1/namespaces/{ns}/secrets",
               {"metadata": {"name": "db"}, "stringData": {"password": "x"}})[0] in OK  # fmt: skip
    assert api("GET", f"/api/v1/namespaces/{ns}/secrets/db")[0] == 200
    api("POST", f"/api/v1/namespaces/{ns}/pods/{pod}/exec?command=true&stdout=true")
    admin = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    binding = {"metadata": {"name": "oops"}, "roleRef": admin,
               "subjects": [{"kind": "User", "name": "eve"}]}  # fmt: skip
    assert api("POST", f"{RBAC}/namespaces/{ns}/rolebindings", binding)[0] in OK
    wild = {"metadata": {"name": "everything"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]}  # fmt: skip
    assert api("POST", f"{RBAC}/namespaces/{ns}/roles", wild)[0] in OK
    patch = {"metadata": {"labels": {"touched": "yes"}}}
    assert api("PATCH", f"/apis/auditlock.io/v1alpha1/namespaces/{ns}/auditpolicies/capture",
               patch, token=alerting.editor,
               content_type="application/merge-patch+json")[0] == 200  # fmt: skip
    for _ in range(5):
        assert api("GET", f"/api/v1/namespaces/{ns}/secrets/db", token=alerting.nobody)[0] == 403

    secret = _alert(alerting, alertname="AuditlockSecretReadByHuman", target_name="db")
    assert secret["labels"]["actor_name"] == "admin"
    assert secret["labels"]["severity"] == "warning"
    assert secret["labels"]["auditlock_source"] == "operator"
    assert secret["annotations"]["summary"] == f"admin read Secret {ns}/db"
    assert "k8s-audit-" in secret["annotations"]["events"]
    exec_alert = _alert(alerting, alertname="AuditlockPodExec", target_name=pod)
    assert exec_alert["annotations"]["summary"] == f"admin ran exec into pod {ns}/{pod}"
    bound = _alert(alerting, alertname="AuditlockClusterAdminBinding", target_name="oops")
    assert bound["labels"]["severity"] == "critical"
    _alert(alerting, alertname="AuditlockWildcardRole", target_name="everything")
    changed = _alert(alerting, alertname="AuditlockPolicyChanged", target_name="capture")
    assert changed["labels"]["actor_name"] == f"system:serviceaccount:{ns}:editor"
    refused = _alert(
        alerting,
        alertname="AuditlockRepeatedAuthorizationFailures",
        actor_name=f"system:serviceaccount:{ns}:nobody",
    )
    assert refused["annotations"]["summary"].startswith("5 refused requests by ")
    # the file:// destination enforces no retention lock: a trail-integrity alert
    _alert(alerting, alertname="AuditlockRetentionLockMissing", policy="capture")

    # Kubernetes Events on the policy and on the pod the exec named
    wait_for(lambda: _kube_events(alerting, "Pod", pod), 15, "an Event on the pod")
    on_policy = _kube_events(alerting, "AuditPolicy", "capture")
    assert any("AuditlockPodExec" in e["message"] for e in on_policy), on_policy
    assert all(e["type"] == "Warning" for e in on_policy if e["reason"] == "AlertFired")


def test_an_audit_alert_rule_fires_resolves_and_reports_its_status(
    alerting: Alerting, tmp_path: Path
) -> None:
    kube, api, ns = alerting.operator.kube, alerting.api, alerting.namespace
    tag = uuid.uuid4().hex[:8]
    rule = {"apiVersion": "auditlock.io/v1alpha1", "kind": "AuditAlertRule",
            "metadata": {"name": "flag-configmaps"},
            "spec": {"severity": "info", "labels": {"tag": tag},
                     "summary": "{{ actor.name }} made ConfigMap {{ target.name }}",
                     "match": [{"field": "target.resource", "equals": "configmaps"},
                               {"field": "target.name", "glob": "flag-*"}],
                     "resolveAfterSeconds": 10}}  # fmt: skip
    path = tmp_path / "rule.yaml"
    path.write_text(yaml.safe_dump(rule))
    kube.kubectl("apply", "-n", ns, "-f", str(path))

    def ready() -> bool:
        got = kube.get_json(
            f"/apis/auditlock.io/v1alpha1/namespaces/{ns}/auditalertrules/flag-configmaps"
        )
        conditions = got.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, 15, "the rule to be Ready")
    assert api("POST", f"/api/v1/namespaces/{ns}/configmaps",
               {"metadata": {"name": f"flag-{tag}"}})[0] in OK  # fmt: skip
    fired = _alert(alerting, alertname="flag-configmaps", tag=tag)
    assert fired["labels"]["rule"] == f"{ns}/flag-configmaps"
    assert fired["annotations"]["summary"] == f"admin made ConfigMap flag-{tag}"
    wait_for(
        lambda: "1" in kube.kubectl("get", "aar", "flag-configmaps", "-n", ns).stdout.split(),
        15,
        "FIRING 1 in kubectl get",
    )
    _alert(alerting, "resolved", alertname="flag-configmaps", tag=tag)


def test_a_sigkilled_collector_is_caught_from_outside_and_resolves_when_back(
    alerting: Alerting, tmp_path: Path
) -> None:
    ns = alerting.namespace
    pod = f"app-{uuid.uuid4().hex[:6]}"
    stream = f"rig_{ns}_{pod}"
    config = make_config(
        tmp_path,
        f"file://{alerting.policy_dir}",
        ports=True,
        stream={"id": stream},
        source={"cluster": "rig", "namespace": ns, "pod": pod},
        delivery={"heartbeat_seconds": 1.0},
    )
    with sidecar_process(tmp_path, config) as collector:
        collector.start()
        time.sleep(2.5)  # a few heartbeats in the destination
        collector.kill()
        killed = time.monotonic()
        silent = _alert(alerting, alertname="AuditlockStreamSilent", stream=stream)
        # within 2 x heartbeat + the watcher's period (+ Alertmanager's group_wait)
        assert time.monotonic() - killed < 2 * 1.0 + 30
        assert silent["labels"]["pod"] == pod and silent["labels"]["policy"] == "capture"
        assert silent["labels"]["severity"] == "critical"
        assert stream in silent["annotations"]["events"]
        collector.start()
        _alert(alerting, "resolved", alertname="AuditlockStreamSilent", stream=stream)


def test_alerts_are_signed_events_in_the_operators_trail(alerting: Alerting) -> None:
    def fired() -> list[dict[str, Any]]:
        return [
            e
            for e in ledger_events(alerting.store)
            if e["category"] == "alert" and e["action"] == "alert.fired"
        ]

    wait_for(
        lambda: any(e["details"]["alert"]["name"] == "AuditlockSecretReadByHuman" for e in fired()),
        30,
        "the alert event in the operator's trail",
    )
    event = next(
        e for e in fired() if e["details"]["alert"]["name"] == "AuditlockSecretReadByHuman"
    )
    assert event["actor"] == {"kind": "system", "name": "auditlock-alerts"}
    (ref,) = event["details"]["events"]
    assert ref["id"].startswith("k8s-audit-")
    stored_ids = {e["id"] for e in ledger_events(alerting.store)}
    assert ref["id"] in stored_ids  # the alert names an event that is in the trail
    # ten seconds without another read: resolved at Alertmanager and in the trail
    _alert(alerting, "resolved", alertname="AuditlockSecretReadByHuman", target_name="db")
    wait_for(
        lambda: any(
            e["category"] == "alert"
            and e["action"] == "alert.resolved"
            and e["details"]["alert"]["name"] == "AuditlockSecretReadByHuman"
            for e in ledger_events(alerting.store)
        ),
        30,
        "the resolution in the operator's trail",
    )


def test_the_validating_webhook_refuses_what_cel_cannot_check(
    alerting: Alerting, tmp_path: Path
) -> None:
    from kubernetes import client

    from auditlock.operator.webhook_config import alert_rule_webhook_configuration

    kube, ns = alerting.operator.kube, alerting.namespace
    config = alert_rule_webhook_configuration(
        f"alerts-{uuid.uuid4().hex[:6]}", kube.ca_pem, url=alerting.operator.webhook_url
    )
    with kube.api_client() as api:
        adm = client.AdmissionregistrationV1Api(api)
        adm.create_validating_webhook_configuration(config)
        try:
            rule = {"apiVersion": "auditlock.io/v1alpha1", "kind": "AuditAlertRule",
                    "metadata": {"name": "slow"},
                    "spec": {"summary": "{{ actor.name }}",
                             "match": [{"field": "actor.name", "regex": "(a+)+$"}]}}  # fmt: skip
            path = tmp_path / "slow.yaml"
            path.write_text(yaml.safe_dump(rule))

            def refused() -> str:
                result = kube.kubectl("apply", "-n", ns, "-f", str(path), check=False)
                return result.stderr if result.returncode != 0 else ""

            # the API server picks the new configuration up within a moment
            wait_for(refused, 15, "the webhook to refuse the rule")
            stderr = refused()
            assert 'admission webhook "validate.auditalertrules.auditlock.io" denied' in stderr
            assert "a repeat inside a repeat can backtrack catastrophically" in stderr
            rule["spec"]["match"][0]["regex"] = "^a+$"
            path.write_text(yaml.safe_dump(rule))
            assert kube.kubectl("apply", "-n", ns, "-f", str(path), check=False).returncode == 0
        finally:
            adm.delete_validating_webhook_configuration(config["metadata"]["name"])
