"""Control-plane coverage (docs/operator.md, "Control-plane coverage"), row by row,
against the real kube-apiserver: its audit webhook posts to the operator's /audit, the
operator hands the events to its real collector, and the tests read the signed trail.

One control plane, one operator, one collector and one round of requests for the whole
module (the `trail` fixture); each test checks one row group of the table.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auditlock.ledger.value_hash import key_id, value_hash
from tests.helpers.kube_api import Api
from tests.helpers.policies import create_pod, file_spec
from tests.helpers.trail import stored_events
from tests.servers.auditlock_operator import (
    RunningOperator,
    label_namespace,
    operator_collector_process,
    remove_policy,
    secret_hash_key,
)
from tests.servers.kube_controlplane import KubeControlPlane
from tests.servers.sidecar import cli_verify

SECRET_VALUE = "hunter2-" + uuid.uuid4().hex[:8]
SECRET_VALUE_2 = "hunter3-" + uuid.uuid4().hex[:8]
SECRET_USER = "svc-" + uuid.uuid4().hex[:8]
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@dataclass
class Trail:
    namespace: str
    names: dict[str, str]
    events: list[dict[str, Any]]
    store: Path
    hash_key: bytes

    def find(self, resource: str, action: str, name: str | None = None) -> dict[str, Any]:
        for event in self.events:
            target = event.get("target", {})
            same = target.get("resource") == resource and event["action"] == action
            if same and (name is None or target.get("name") == name):
                return event
        raise AssertionError(f"no {action} of {resource} {name or ''} in the trail")


def _requests(api: Api, kube: KubeControlPlane, ns: str, pod: str) -> dict[str, str]:
    """One of every kind of request in the table (and some noise); names it used."""
    tag = uuid.uuid4().hex[:6]
    names = {"cr": f"cov-reader-{tag}", "crb": f"cov-bind-{tag}", "crd": f"widgets{tag}.cov.io"}
    ok = (200, 201)

    def create(path: str, body: dict[str, Any]) -> None:
        status, answer = api("POST", path, body)
        assert status in ok, answer

    rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}
    mallory = {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}
    # authorization
    create(f"{RBAC}/namespaces/{ns}/roles", {"metadata": {"name": "reader"}, "rules": rules})
    patch = {"rules": [*rules, {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}
    assert (
        api(
            "PATCH",
            f"{RBAC}/namespaces/{ns}/roles/reader",
            patch,
            content_type="application/merge-patch+json",
        )[0]
        == 200
    )
    create(
        f"{RBAC}/namespaces/{ns}/rolebindings",
        {"metadata": {"name": "readers"}, "roleRef": ref, "subjects": [mallory]},
    )
    create(f"{RBAC}/clusterroles", {"metadata": {"name": names["cr"]}, "rules": rules})
    cref = {**ref, "kind": "ClusterRole", "name": names["cr"]}
    create(
        f"{RBAC}/clusterrolebindings",
        {"metadata": {"name": names["crb"]}, "roleRef": cref, "subjects": [mallory]},
    )
    assert api("DELETE", f"{RBAC}/clusterrolebindings/{names['crb']}")[0] == 200
    assert api("DELETE", f"{RBAC}/clusterroles/{names['cr']}")[0] == 200
    assert api("DELETE", f"{RBAC}/namespaces/{ns}/rolebindings/readers")[0] == 200
    # A ServiceAccount that may create RoleBindings but holds no `bind` verb: its
    # token is a TokenRequest, its attempt to bind admin is refused (403).
    create(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "limited"}})
    binder = [
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["rolebindings"],
            "verbs": ["create"],
        }
    ]
    create(f"{RBAC}/namespaces/{ns}/roles", {"metadata": {"name": "binder"}, "rules": binder})
    sa = {"kind": "ServiceAccount", "name": "limited", "namespace": ns}
    create(
        f"{RBAC}/namespaces/{ns}/rolebindings",
        {
            "metadata": {"name": "binder"},
            "roleRef": {**ref, "name": "binder"},
            "subjects": [sa],
        },
    )
    status, token_review = api(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/limited/token",
        {"spec": {"expirationSeconds": 600}},
    )
    assert status in ok
    sa_token = token_review["status"]["token"]
    admin_ref = ref  # Role reader: rights the ServiceAccount does not hold
    statuses = []
    for _ in range(30):  # the RBAC authorizer's cache follows the binding within a moment
        status, answer = api("POST", f"{RBAC}/namespaces/{ns}/rolebindings",
                        {"metadata": {"name": "escalate"}, "roleRef": admin_ref,
                         "subjects": [sa]}, token=sa_token)  # fmt: skip
        statuses.append((status, str(answer.get("message"))[:200]))
        if status != 401:
            break
        time.sleep(0.2)
    assert status == 403, statuses
    # access
    for sub, method in (
        ("exec?command=true&stdout=true", "POST"),
        ("attach", "POST"),
        ("portforward?ports=80", "GET"),
        ("proxy/", "GET"),
    ):
        api(method, f"/api/v1/namespaces/{ns}/pods/{pod}/{sub}")
    assert api("GET", f"/api/v1/namespaces/{ns}/secrets/db")[0] == 200
    assert api("GET", f"/api/v1/namespaces/{ns}/secrets")[0] == 200
    assert api("GET", f"/api/v1/namespaces/{ns}/secrets?watch=true&timeoutSeconds=1")[0] == 200
    assert (
        api("GET", f"/api/v1/namespaces/{ns}/secrets/db", headers={"Impersonate-User": "bob"})[0]
        == 403
    )
    assert api("GET", f"/api/v1/namespaces/{ns}/secrets/db", token=sa_token)[0] == 403
    assert api("GET", f"/api/v1/namespaces/{ns}/secrets/db", token="not-a-token")[0] == 401
    # configuration
    labels = {"app": "cov"}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.example/c:1"}]},
    }
    job_template = {
        "metadata": {"labels": labels},
        "spec": {**template["spec"], "restartPolicy": "Never"},
    }
    objects = [
        ("/api/v1", "configmaps", {"metadata": {"name": "settings"}, "data": {"k": "v"}}),
        ("/api/v1", "services",
         {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "selector": labels}}),
        ("/apis/apps/v1", "deployments",
         {"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": labels},
                                                 "template": template}}),
        ("/apis/apps/v1", "statefulsets",
         {"metadata": {"name": "db"}, "spec": {"selector": {"matchLabels": labels},
                                                "serviceName": "web", "template": template}}),
        ("/apis/apps/v1", "daemonsets",
         {"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": labels},
                                                   "template": template}}),
        ("/apis/batch/v1", "jobs",
         {"metadata": {"name": "once"}, "spec": {"template": job_template}}),
        ("/apis/batch/v1", "cronjobs",
         {"metadata": {"name": "nightly"},
          "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_template}}}}),
        ("/apis/networking.k8s.io/v1", "ingresses",
         {"metadata": {"name": "web"},
          "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
        ("/apis/networking.k8s.io/v1", "networkpolicies",
         {"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}),
    ]  # fmt: skip
    for prefix, plural, body in objects:
        status, answer = api("POST", f"{prefix}/namespaces/{ns}/{plural}", body)
        assert status in ok, (plural, answer)
    assert (
        api(
            "PATCH",
            f"/api/v1/namespaces/{ns}/configmaps/settings",
            {"data": {"k": "w"}},
            content_type="application/merge-patch+json",
        )[0]
        == 200
    )
    assert api("DELETE", f"/api/v1/namespaces/{ns}/configmaps/settings")[0] == 200
    enforce = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    assert (
        api(
            "PATCH",
            f"/api/v1/namespaces/{ns}",
            enforce,
            content_type="application/merge-patch+json",
        )[0]
        == 200
    )
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        path = f"/apis/admissionregistration.k8s.io/v1/{kind}"
        assert api("POST", path, {"metadata": {"name": f"cov-{tag}"}, "webhooks": []})[0] in ok
        assert api("DELETE", f"{path}/cov-{tag}")[0] == 200
    plural = names["crd"].split(".")[0]
    crd = {
        "metadata": {"name": names["crd"]},
        "spec": {"group": "cov.io", "scope": "Namespaced",
                 "names": {"plural": plural, "singular": f"widget{tag}", "kind": f"Widget{tag}"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]},
    }  # fmt: skip
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    assert api("POST", crds, crd)[0] in ok
    assert api("DELETE", f"{crds}/{names['crd']}")[0] == 200
    policies = f"/apis/auditlock.io/v1alpha1/namespaces/{ns}/auditpolicies"
    second = {
        "apiVersion": "auditlock.io/v1alpha1",
        "kind": "AuditPolicy",
        "metadata": {"name": "second"},
        "spec": file_spec(kube.workdir / f"t-{tag}"),
    }
    assert api("POST", policies, second)[0] in ok
    assert (
        api(
            "PATCH",
            f"{policies}/second",
            {"spec": {"retention": {"days": 9}}},
            content_type="application/merge-patch+json",
        )[0]
        == 200
    )
    assert api("DELETE", f"{policies}/second")[0] == 200
    # data (deleted by the `trail` fixture once the operator has read it)
    assert (
        api(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": "api-key"},
             "stringData": {"key": SECRET_VALUE, "user": SECRET_USER}},
        )[0]
        in ok
    )  # fmt: skip
    assert (
        api(
            "PATCH",
            f"/api/v1/namespaces/{ns}/secrets/api-key",
            {"stringData": {"key": SECRET_VALUE_2}},
            content_type="application/merge-patch+json",
        )[0]
        == 200
    )
    # noise
    assert api("GET", f"/api/v1/namespaces/{ns}/configmaps")[0] == 200
    assert api("GET", f"/api/v1/namespaces/{ns}/pods")[0] == 200
    lease = {"metadata": {"name": "l"}, "spec": {"holderIdentity": "x"}}
    assert api("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", lease)[0] in ok
    event = {
        "metadata": {"name": f"e-{tag}"},
        "involvedObject": {"name": pod, "namespace": ns},
        "reason": "Test",
        "message": "m",
    }
    assert api("POST", f"/api/v1/namespaces/{ns}/events", event)[0] in ok
    api("GET", "/healthz")
    # The last one, so that its arrival means every earlier batch arrived.
    create(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "the-end"}})
    return names


@pytest.fixture(scope="module")
def trail(
    running_operator: RunningOperator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trail]:
    kube = running_operator.kube
    api = Api(kube)
    ns = label_namespace(kube, kube.create_namespace())
    policy = {"apiVersion": "auditlock.io/v1alpha1", "kind": "AuditPolicy",
              "metadata": {"name": "capture"},
              "spec": file_spec(tmp_path_factory.mktemp("app-trail"))}  # fmt: skip
    workdir = tmp_path_factory.mktemp("coverage")
    with operator_collector_process(running_operator.collector_port, workdir) as store:
        assert api("POST", f"/apis/auditlock.io/v1alpha1/namespaces/{ns}/auditpolicies",
                   policy)[0] in (200, 201)  # fmt: skip
        deadline = time.monotonic() + 15
        while ns not in running_operator.thread.policies.namespaces():
            assert time.monotonic() < deadline, "policy never reached the registry"
            time.sleep(0.1)
        assert api("POST", f"/api/v1/namespaces/{ns}/secrets",
                   {"metadata": {"name": "db"}, "stringData": {"password": SECRET_VALUE}})[0] in (
            200, 201)  # fmt: skip
        pod = create_pod(kube, ns, {"app": "payments"})["metadata"]["name"]
        names = _requests(api, kube, ns, pod)
        deadline = time.monotonic() + 30
        while not any(e.get("target", {}).get("name") == "the-end" for e in stored_events(store)):
            assert time.monotonic() < deadline, "the last request never reached the trail"
            time.sleep(0.3)
        # The operator read api-key after its writes; its delete names the keys it saw.
        assert api("DELETE", f"/api/v1/namespaces/{ns}/secrets/api-key")[0] == 200
        assert api("DELETE", f"/api/v1/namespaces/{ns}/configmaps/the-end")[0] == 200
        deadline = time.monotonic() + 30
        while not any(e.get("target", {}).get("name") == "the-end" and e["action"] == "delete"
                      for e in stored_events(store)):  # fmt: skip
            assert time.monotonic() < deadline, "the last delete never reached the trail"
            time.sleep(0.3)
        time.sleep(1.0)
        yield Trail(ns, names, stored_events(store), store, secret_hash_key(kube))
        remove_policy(kube, ns, "capture")
    # After the collector stopped (it closed its stream): the trail verifies.
    result = cli_verify(f"file://{store}", workdir / "ed25519.pub.pem")
    assert result is None or result.returncode == 0, (result.stdout, result.stderr)


def test_authorization_rbac_writes_record_who_was_granted_what(trail: Trail) -> None:
    ns = trail.namespace
    role = trail.find("roles", "create", "reader")
    assert role["category"] == "authorization" and role["target"]["namespace"] == ns
    assert role["details"]["rules"][0]["resources"] == ["secrets"]
    patched = trail.find("roles", "patch", "reader")
    assert [r["resources"] for r in patched["details"]["rules"]] == [["secrets"], ["pods"]]
    binding = trail.find("rolebindings", "create", "readers")
    assert binding["details"]["subjects"][0]["name"] == "mallory"
    assert binding["details"]["role_ref"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}  # fmt: skip
    assert trail.find("rolebindings", "delete", "readers")["category"] == "authorization"
    # Cluster-scoped: no namespace, in the operator's cluster stream.
    cluster_role = trail.find("clusterroles", "create", trail.names["cr"])
    assert "namespace" not in cluster_role["target"]
    assert cluster_role["details"]["rules"][0]["verbs"] == ["get"]
    crb = trail.find("clusterrolebindings", "create", trail.names["crb"])
    assert crb["details"]["role_ref"]["name"] == trail.names["cr"]
    assert crb["details"]["subjects"][0]["name"] == "mallory"
    trail.find("clusterrolebindings", "delete", trail.names["crb"])
    trail.find("clusterroles", "delete", trail.names["cr"])


def test_authorization_token_requests_and_refused_bind(trail: Trail) -> None:
    token = trail.find("serviceaccounts/token", "create", "limited")
    assert token["category"] == "authorization" and token["outcome"] == "success"
    refused = next(
        e for e in trail.events
        if e["target"].get("name") == "escalate" and e["action"] == "create"
    )  # fmt: skip
    assert refused["category"] == "authorization" and refused["outcome"] == "failure"
    assert refused["details"]["status_code"] == 403
    assert refused["actor"] == {
        "kind": "serviceaccount", "name": f"system:serviceaccount:{trail.namespace}:limited",
        "ip": "127.0.0.1"}  # fmt: skip
    assert refused["details"]["role_ref"]["name"] == "reader"


def test_access_long_running_secret_reads_impersonation_and_refusals(trail: Trail) -> None:
    for sub in ("exec", "attach", "portforward", "proxy"):
        event = next(e for e in trail.events if e["target"]["resource"] == f"pods/{sub}")
        assert event["category"] == "access" and event["action"] == sub
    reads = [e for e in trail.events if e["target"]["resource"] == "secrets"
             and e["category"] == "access"]  # fmt: skip
    assert {e["action"] for e in reads} >= {"get", "list", "watch"}
    # (The operator's own reads of written Secrets, to hash them, are in the trail too.)
    by_admin = [e for e in reads if e["action"] == "get" and e["outcome"] == "success"
                and e["target"].get("name") == "db"]  # fmt: skip
    assert by_admin and by_admin[0]["actor"]["name"] == "admin"
    impersonated = next(e for e in reads if "impersonated_user" in e["details"])
    assert impersonated["actor"]["name"] == "admin"
    assert impersonated["details"]["impersonated_user"]["username"] == "bob"
    assert impersonated["outcome"] == "failure" and impersonated["details"]["status_code"] == 403
    forbidden = [e for e in reads if e["actor"]["kind"] == "serviceaccount"]
    assert forbidden and forbidden[0]["outcome"] == "failure"
    unauthenticated = [e for e in reads if e["details"].get("status_code") == 401]
    assert unauthenticated and unauthenticated[0]["outcome"] == "failure"


def test_configuration_changes_are_recorded(trail: Trail) -> None:
    for resource, name in (
        ("configmaps", "settings"), ("services", "web"), ("deployments", "web"),
        ("statefulsets", "db"), ("daemonsets", "agent"), ("jobs", "once"),
        ("cronjobs", "nightly"), ("ingresses", "web"), ("networkpolicies", "deny"),
    ):  # fmt: skip
        event = trail.find(resource, "create", name)
        assert event["category"] == "configuration", resource
        assert event["target"]["namespace"] == trail.namespace
    trail.find("configmaps", "patch", "settings")
    trail.find("configmaps", "delete", "settings")
    # The rig labels the namespace for its operator too; that patch may be in the trail.
    label_changes = [
        event["details"].get("labels")
        for event in trail.events
        if event.get("target", {}).get("resource") == "namespaces"
        and event["action"] == "patch"
        and event["target"].get("name") == trail.namespace
    ]
    assert {"pod-security.kubernetes.io/enforce": "restricted"} in label_changes, label_changes
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        created = next(e for e in trail.events if e["target"]["resource"] == kind)
        assert created["category"] == "configuration" and "namespace" not in created["target"]
    trail.find("customresourcedefinitions", "create", trail.names["crd"])
    trail.find("customresourcedefinitions", "delete", trail.names["crd"])
    for action in ("create", "patch", "delete"):
        event = trail.find("auditpolicies", action, "second")
        assert event["category"] == "configuration"


def test_data_secret_writes_without_their_values(trail: Trail) -> None:
    for action in ("create", "patch", "delete"):
        assert trail.find("secrets", action, "api-key")["category"] == "data"
    key = trail.hash_key
    first, second = (value_hash(v.encode(), key) for v in (SECRET_VALUE, SECRET_VALUE_2))
    user = value_hash(SECRET_USER.encode(), key)
    # Read right after the patch: exactly the patched value, at the version the operator saw.
    patched = trail.find("secrets", "patch", "api-key")["details"]["secret"]
    assert patched["keys"] == {"key": second, "user": user}
    assert patched["hash"] == "hmac-sha256" and patched["hash_key_id"] == key_id(key)
    assert patched["observed_after_write"] is True
    version = int(patched["observed_resource_version"])
    # Read right after the create: the created value, or the patched one when the patch
    # landed before the operator read it (the event says which version it saw).
    created = trail.find("secrets", "create", "api-key")["details"]["secret"]
    assert created["observed_after_write"] is True
    observed = int(created["observed_resource_version"])
    assert observed <= version
    assert created["keys"] == {"key": first if observed < version else second, "user": user}
    deleted = trail.find("secrets", "delete", "api-key")["details"]["secret"]
    assert deleted == {"keys_last_seen": ["key", "user"],
                       "last_seen_resource_version": str(version)}  # fmt: skip
    # No stored object holds a value: not as text, base64 or unkeyed SHA-256.
    stored = b"".join(p.read_bytes() for p in trail.store.rglob("*") if p.is_file())
    assert stored.count(b"api-key") >= 3  # the events are there to be searched
    for value in (SECRET_VALUE, SECRET_VALUE_2, SECRET_USER):
        for form in (value.encode(), base64.b64encode(value.encode()),
                     hashlib.sha256(value.encode()).hexdigest().encode()):  # fmt: skip
            assert form not in stored, form


def test_noise_stays_out(trail: Trail) -> None:
    resources = {e["target"]["resource"] for e in trail.events}
    assert not resources & {"leases", "events", "pods"}
    assert not [e for e in trail.events if e["target"]["resource"] == "configmaps"
                and e["action"] in ("get", "list", "watch")]  # fmt: skip
    assert not [e for e in trail.events if "healthz" in e["details"].get("request_uri", "")]
