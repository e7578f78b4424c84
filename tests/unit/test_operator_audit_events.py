"""Mapping API server audit events and watch events to ledger events."""

from __future__ import annotations

from typing import Any

import pytest

from auditlock.ledger.event import validate_event
from auditlock.ledger.value_hash import key_id, value_hash
from auditlock.operator.audit_events import from_audit_event, from_watch_event


def _audit(resource: str, verb: str, subresource: str = "", **extra: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "namespace": "shop", "name": "x"}
    if resource in ("roles", "rolebindings"):
        ref["apiGroup"] = "rbac.authorization.k8s.io"  # as the API server sends them
    if subresource:
        ref["subresource"] = subresource
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "0f7c4a4e-4b7e-4d7e-9a53-8a8ad7c2d0a1",
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/shop/{resource}/x",
        "verb": verb,
        "user": {"username": "alice@example.com", "groups": ["dev", "system:authenticated"]},
        "sourceIPs": ["10.0.0.7"],
        "userAgent": "kubectl/v1.35",
        "objectRef": ref,
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-11-29T15:08:52.123456Z",
        "stageTimestamp": "2026-11-29T15:08:52.223456Z",
        **extra,
    }


@pytest.mark.parametrize(
    ("resource", "verb", "sub", "category", "action"),
    [
        ("pods", "create", "exec", "access", "exec"),
        ("pods", "get", "portforward", "access", "portforward"),
        ("pods", "create", "attach", "access", "attach"),
        ("secrets", "get", "", "access", "get"),
        ("secrets", "update", "", "data", "update"),
        ("roles", "create", "", "authorization", "create"),
        ("rolebindings", "delete", "", "authorization", "delete"),
        ("configmaps", "patch", "", "configuration", "patch"),
    ],
)
def test_captured_requests_map_to_valid_ledger_events(
    resource: str, verb: str, sub: str, category: str, action: str
) -> None:
    event = from_audit_event(_audit(resource, verb, sub), {"shop"})
    assert event is not None
    assert (event["category"], event["action"]) == (category, action)
    assert event["actor"] == {"kind": "user", "name": "alice@example.com", "ip": "10.0.0.7"}
    assert event["id"] == "k8s-audit-0f7c4a4e-4b7e-4d7e-9a53-8a8ad7c2d0a1"
    # The ledger's own model accepts it (the collector would add `source`).
    validate_event({**event, "source": {"cluster": "c"}})


@pytest.mark.parametrize(
    "event",
    [
        _audit("secrets", "get", objectRef={"resource": "secrets", "namespace": "other"}),
        _audit("pods", "get"),
        _audit("configmaps", "get"),
        _audit("roles", "list"),
        _audit("secrets", "get", stage="ResponseStarted"),
        _audit("secrets", "get", objectRef="nonsense"),
    ],
)
def test_out_of_scope_events_are_ignored(event: dict[str, Any]) -> None:
    assert from_audit_event(event, {"shop"}) is None


def test_actor_kinds_and_outcome() -> None:
    sa = _audit("secrets", "get", user={"username": "system:serviceaccount:shop:api"})
    assert from_audit_event(sa, {"shop"})["actor"]["kind"] == "serviceaccount"  # type: ignore[index]
    denied = from_audit_event(_audit("secrets", "get", responseStatus={"code": 403}), {"shop"})
    assert denied is not None and denied["outcome"] == "failure"
    unknown = from_audit_event(_audit("secrets", "get", responseStatus={}), {"shop"})
    assert unknown is not None and unknown["outcome"] == "unknown"


def test_watch_events_hash_secret_values_and_never_store_them() -> None:
    body = {
        "metadata": {
            "name": "db",
            "namespace": "shop",
            "uid": "u1",
            "resourceVersion": "42",
            "managedFields": [{"manager": "kubectl-edit"}],
        },
        "data": {"password": "czNjcjN0"},
    }
    key = bytes(range(32))
    event = from_watch_event("Secret", "MODIFIED", body, "2026-11-29T15:08:52Z", key)
    assert event is not None
    assert event["category"] == "data" and event["action"] == "update"
    # Keyed: an unkeyed SHA-256 of "s3cr3t" (or of its base64) would be a dictionary away.
    assert event["details"]["secret"]["keys"] == {"password": value_hash(b"s3cr3t", key)}
    assert event["details"]["secret"]["hash_key_id"] == key_id(key)
    for form in ("czNjcjN0", "s3cr3t", value_hash(b"s3cr3t"), value_hash(b"czNjcjN0")):
        assert form not in repr(event)
    assert event["details"]["last_manager"] == "kubectl-edit"
    validate_event({**event, "source": {}})
    unkeyed = from_watch_event("Secret", "MODIFIED", body, "2026-11-29T15:08:52Z")
    assert unkeyed is not None
    assert unkeyed["details"]["secret"] == {"key_names": ["password"], "not_hashed": "no-hash-key"}
    assert from_watch_event("Secret", "BOOKMARK", body, "2026-11-29T15:08:52Z") is None
    assert from_watch_event("Pod", "ADDED", body, "2026-11-29T15:08:52Z") is None


def _cluster(group: str, resource: str, verb: str, **extra: Any) -> dict[str, Any]:
    ref = {"resource": resource, "name": "x", "apiGroup": group}
    return _audit(resource, verb, objectRef=ref, **extra)


@pytest.mark.parametrize(
    ("group", "resource", "category"),
    [
        ("rbac.authorization.k8s.io", "clusterroles", "authorization"),
        ("rbac.authorization.k8s.io", "clusterrolebindings", "authorization"),
        ("", "namespaces", "configuration"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "configuration"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "configuration"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "configuration"),
    ],
)
def test_cluster_scoped_writes_are_kept_without_any_policy(
    group: str, resource: str, category: str
) -> None:
    event = from_audit_event(_cluster(group, resource, "create"), set())
    assert event is not None and event["category"] == category
    assert "namespace" not in event["target"]
    validate_event({**event, "source": {"cluster": "c"}})
    assert from_audit_event(_cluster(group, resource, "get"), set()) is None


def test_binding_subjects_role_ref_and_rules_are_in_details() -> None:
    body = {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "x"},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    ref = {"resource": "clusterrolebindings", "name": "b", "apiGroup": "rbac.authorization.k8s.io"}
    event = from_audit_event(_audit("x", "create", objectRef=ref, requestObject=body), set())
    assert event is not None
    assert event["details"]["subjects"] == [body["subjects"][0]]
    assert event["details"]["role_ref"]["name"] == "x"
    rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    role = from_audit_event(_audit("roles", "update", requestObject={"rules": rules}), {"shop"})
    assert role is not None and role["details"]["rules"] == rules


def test_impersonation_keeps_both_users() -> None:
    raw = _audit("secrets", "get", impersonatedUser={"username": "bob", "groups": ["ops"]})
    event = from_audit_event(raw, {"shop"})
    assert event is not None
    assert event["actor"]["name"] == "alice@example.com"
    assert event["details"]["impersonated_user"] == {"username": "bob", "groups": ["ops"]}


@pytest.mark.parametrize(
    ("group", "resource"),
    [("apps", "deployments"), ("batch", "cronjobs"), ("networking.k8s.io", "networkpolicies"),
     ("", "services"), ("serving.knative.dev", "services")],
)  # fmt: skip
def test_namespaced_configuration_needs_a_policy_and_the_right_group(
    group: str, resource: str
) -> None:
    ref = {"resource": resource, "namespace": "shop", "name": "x", "apiGroup": group}
    kept = from_audit_event(_audit(resource, "patch", objectRef=ref), {"shop"})
    assert (kept is not None) == (group != "serving.knative.dev")
    assert from_audit_event(_audit(resource, "patch", objectRef=ref), {"other"}) is None


def test_auditpolicy_writes_are_kept_in_any_namespace() -> None:
    ref = {
        "resource": "auditpolicies",
        "namespace": "gone",
        "name": "p",
        "apiGroup": "auditlock.io",
    }
    event = from_audit_event(_audit("auditpolicies", "delete", objectRef=ref), set())
    assert event is not None and event["category"] == "configuration"


def test_failed_authentication_is_kept_from_its_only_stage() -> None:
    raw = _audit("secrets", "get", stage="ResponseStarted", user={},
                 responseStatus={"code": 401, "reason": "Unauthorized"})  # fmt: skip
    event = from_audit_event(raw, {"shop"})
    assert event is not None and event["outcome"] == "failure"
    assert event["actor"]["kind"] == "anonymous"
    assert event["details"]["status_reason"] == "Unauthorized"
