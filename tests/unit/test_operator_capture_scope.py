"""Which namespaces the operator's cluster capture records (docs/operator.md,
"Cluster-level capture"): those a policy enables a source in, and for a while those it
did, so a request made just before its policy was deleted is still recorded when the
API server's batch arrives after the delete."""

from __future__ import annotations

import time

import pytest

from auditlock.operator import capture
from auditlock.operator.capture import ClusterCapture
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.policy import parse_spec

REQUEST = {
    "stage": "ResponseComplete", "auditID": "a-1", "verb": "create",
    "requestReceivedTimestamp": "2026-12-01T00:00:00.000000Z",
    "objectRef": {"resource": "secrets", "namespace": "shop", "name": "refund-key"},
    "responseStatus": {"code": 201},
}  # fmt: skip


def _policy(**cluster: bool) -> PolicyEntry:
    spec = parse_spec({"destination": {"file": {"path": "/trail"}}, "retention": {"days": 1},
                       "sources": {"cluster": cluster}})  # fmt: skip
    return PolicyEntry("shop", "p", "uid", 1, spec, "h", "2026-01-01T00:00:00Z")


def test_a_namespace_stays_in_scope_for_a_while_after_its_policy_is_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capture, "SCOPE_LINGER_SECONDS", 0.3)
    registry = PolicyRegistry()
    scope = ClusterCapture(registry, None)
    assert scope._namespaces("audit_webhook") == set()
    registry.put(_policy())
    assert scope._namespaces("audit_webhook") == {"shop"}
    assert scope._namespaces("watch") == set()  # that source is off in the policy
    registry.remove("shop", "p")
    still = scope._namespaces("audit_webhook")
    assert still == {"shop"}
    assert capture.from_audit_event(REQUEST, still) is not None
    time.sleep(0.4)
    assert scope._namespaces("audit_webhook") == set()
    assert capture.from_audit_event(REQUEST, set()) is None


def test_a_source_turned_off_lingers_only_as_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "SCOPE_LINGER_SECONDS", 0.3)
    registry = PolicyRegistry()
    scope = ClusterCapture(registry, None)
    registry.put(_policy(watch=True))
    assert scope._namespaces("watch") == {"shop"}
    registry.put(PolicyEntry("shop", "p", "uid", 2, _policy().spec, "h2", "2026-01-01T00:00:00Z"))
    assert scope._namespaces("watch") == {"shop"}
    time.sleep(0.4)
    assert scope._namespaces("watch") == set()
    assert scope._namespaces("audit_webhook") == {"shop"}
