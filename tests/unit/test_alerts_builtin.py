"""Every built-in event rule is a valid AuditAlertRule spec, fires on the event it is
for and not on its look-alikes; the state alerts fire, resend and resolve."""

from __future__ import annotations

from typing import Any

import pytest

from auditlock.alerts import builtin
from auditlock.alerts.engine import Engine
from auditlock.alerts.model import parse_rule_spec
from auditlock.alerts.state import StateAlerts
from tests.helpers.events import small


@pytest.mark.parametrize("name", sorted(builtin.EVENT_RULES))
def test_each_builtin_is_a_valid_rule(name: str) -> None:
    parse_rule_spec(builtin.EVENT_RULES[name])


def _event(**fields: Any) -> dict[str, Any]:
    plain = {
        "id": "k8s-audit-1",
        "time": "2026-11-30T20:00:00Z",
        "target": {"resource": "secrets", "namespace": "prod", "name": "db"},
        "source": None,
        "details": {},
    }
    return small(**{**plain, **fields})


FIRES = {
    "AuditlockSecretReadByHuman": _event(),
    "AuditlockPodExec": _event(
        action="exec", outcome="failure", target={"resource": "pods/exec", "namespace": "p"}
    ),
    "AuditlockClusterAdminBinding": _event(
        category="authorization",
        action="create",
        target={"resource": "clusterrolebindings", "name": "b"},
        details={"role_ref": {"kind": "ClusterRole", "name": "cluster-admin"}},
    ),
    "AuditlockWildcardRole": _event(
        category="authorization",
        action="patch",
        target={"resource": "clusterroles", "name": "r"},
        details={"rules": [{"verbs": ["get"]}, {"verbs": ["*"]}]},
    ),
    "AuditlockPolicyChanged": _event(
        category="configuration",
        action="delete",
        target={"resource": "auditpolicies", "namespace": "p", "name": "x"},
    ),
}
LOOK_ALIKES = [
    _event(actor={"kind": "serviceaccount", "name": "system:serviceaccount:a:b"}),
    _event(outcome="failure"),
    _event(
        category="authorization",
        action="create",
        target={"resource": "rolebindings"},
        details={"role_ref": {"name": "view"}},
    ),
    _event(
        category="authorization",
        action="create",
        target={"resource": "roles"},
        details={"rules": [{"verbs": ["get", "list"]}]},
    ),
    _event(category="configuration", action="create", target={"resource": "auditpolicies"}),
    _event(
        category="configuration",
        action="patch",
        target={"resource": "auditpolicies"},
        actor={"kind": "serviceaccount", "name": "system:serviceaccount:al:op"},
    ),
]


def test_each_builtin_fires_on_its_event_and_none_on_look_alikes() -> None:
    engine = Engine(
        builtin.event_rules(ignore_actors=("system:serviceaccount:al:op",)), source="operator"
    )
    for name, event in FIRES.items():
        fired = [t.alert.name for t in engine.observe(event, "s") if t.change == "fired"]
        assert fired == [name], (name, fired)
    quiet = Engine(
        builtin.event_rules(ignore_actors=("system:serviceaccount:al:op",)), source="operator"
    )
    for event in LOOK_ALIKES:
        assert quiet.observe(event, "s") == [], event


def test_repeated_failures_need_five_within_a_minute() -> None:
    now = [0.0]
    engine = Engine(builtin.event_rules(), source="operator", clock=lambda: now[0])
    refused = _event(outcome="failure", details={"status_code": 403})
    changes = []
    for _ in range(5):
        now[0] += 10
        changes += engine.observe(refused, "s")
    (fired,) = changes
    assert fired.alert.name == "AuditlockRepeatedAuthorizationFailures"
    assert fired.alert.summary == "5 refused requests by alice within 60s"


def test_disabled_builtins_are_not_compiled() -> None:
    names = {r.name for r in builtin.event_rules(frozenset({"AuditlockPodExec"}))}
    assert "AuditlockPodExec" not in names and len(names) == len(builtin.EVENT_RULES) - 1


def test_state_alerts_fire_resend_and_resolve() -> None:
    now = [100.0]
    states = StateAlerts(source="operator", clock=lambda: now[0], resend_seconds=10)
    labels = {"namespace": "p", "stream": "s"}
    fired = states.observe(builtin.STREAM_SILENT, "critical", labels, True, "silent")
    assert fired is not None and fired.change == "fired"
    assert states.observe(builtin.STREAM_SILENT, "critical", labels, True, "silent") is None
    now[0] += 11
    updated = states.observe(builtin.STREAM_SILENT, "critical", labels, True, "silent")
    assert updated is not None and updated.change == "updated"
    resolved = states.observe(builtin.STREAM_SILENT, "critical", labels, False, "ok")
    assert resolved is not None and resolved.change == "resolved"
    assert resolved.alert.ends_at == 111.0
    assert states.firing() == []


def test_an_app_cannot_forge_an_alert_event() -> None:
    from auditlock.alerts.engine import ALERT_ACTOR
    from auditlock.sidecar.pipeline.observers import ReservedIdentity, check_app_event

    with pytest.raises(ReservedIdentity, match="reserved for auditlock"):
        check_app_event("app", {"kind": "system", "name": ALERT_ACTOR}, {}, None)
