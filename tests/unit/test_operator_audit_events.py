"""Mapping API server audit events and watch events to ledger events."""

from __future__ import annotations

from typing import Any

import pytest

from auditlock.ledger.event import validate_event
from auditlock.operator.audit_events import from_audit_event, from_watch_event


def _audit(resource: str, verb: str, subresource: str = "", **extra: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "namespace": "shop", "name": "x"}
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
    event = from_watch_event("Secret", "MODIFIED", body, "2026-11-29T15:08:52Z")
    assert event is not None
    assert event["category"] == "data" and event["action"] == "update"
    assert "czNjcjN0" not in repr(event)
    assert set(event["details"]["keys_sha256"]) == {"password"}
    assert event["details"]["last_manager"] == "kubectl-edit"
    validate_event({**event, "source": {}})
    assert from_watch_event("Secret", "BOOKMARK", body, "2026-11-29T15:08:52Z") is None
    assert from_watch_event("Pod", "ADDED", body, "2026-11-29T15:08:52Z") is None
