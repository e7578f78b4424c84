"""The rules auditlock ships, on by default (docs/alerts.md, "Built-in rules").

Event rules are ordinary rule specs (the same model as an AuditAlertRule; a unit test
validates each) evaluated by the operator on API-server events of every namespace.
Trail-integrity alerts are states rather than events: the trail watcher
(operator/alerting.py) and the collector (sidecar/alerting.py) raise and resolve them by
these names.
"""

from __future__ import annotations

from typing import Any

from auditlock.alerts.rules import Rule, compile_rule

NAMESPACE = "builtin"

# -- security: event rules ------------------------------------------------------------

_WRITE = ["create", "update", "patch"]
POLICY_CHANGED = "AuditlockPolicyChanged"

EVENT_RULES: dict[str, dict[str, Any]] = {
    "AuditlockSecretReadByHuman": {
        "severity": "warning",
        "summary": "{{ actor.name }} read Secret {{ target.namespace }}/{{ target.name }}",
        "description": "A person (not a service account or the system) read a Secret "
        "through the API ({{ action }}, {{ count }} time(s)). Expected during incident "
        "response; otherwise find out why.",
        "match": [
            {"field": "category", "equals": "access"},
            {"field": "target.resource", "equals": "secrets"},
            {"field": "action", "in": ["get", "list", "watch"]},
            {"field": "actor.kind", "equals": "user"},
            {"field": "outcome", "equals": "success"},
        ],
        "groupBy": ["actor.name", "target.namespace", "target.name"],
    },
    "AuditlockPodExec": {
        "severity": "warning",
        "summary": "{{ actor.name }} ran {{ action }} into pod "
        "{{ target.namespace }}/{{ target.name }}",
        "description": "An interactive session into a running container bypasses the "
        "application's own audit trail. Attempts alert too, whatever their outcome "
        "(here: {{ outcome }}).",
        "match": [
            {"field": "category", "equals": "access"},
            {"field": "action", "in": ["exec", "attach"]},
        ],
        "groupBy": ["actor.name", "target.namespace", "target.name"],
    },
    "AuditlockClusterAdminBinding": {
        "severity": "critical",
        "summary": "{{ actor.name }} bound {{ details.role_ref.name }} in "
        "{{ target.resource }} {{ target.name }}",
        "description": "A binding now grants cluster-admin (or admin). Check who is in "
        "its subjects and whether the change was approved.",
        "match": [
            {"field": "category", "equals": "authorization"},
            {"field": "target.resource", "in": ["rolebindings", "clusterrolebindings"]},
            {"field": "action", "in": _WRITE},
            {"field": "outcome", "equals": "success"},
            {"field": "details.role_ref.name", "in": ["cluster-admin", "admin"]},
        ],
        "groupBy": ["actor.name", "target.namespace", "target.name"],
    },
    "AuditlockWildcardRole": {
        "severity": "critical",
        "summary": "{{ actor.name }} wrote {{ target.resource }} {{ target.name }} "
        "granting every verb (*)",
        "description": "A role whose rules allow all verbs; any binding to it grants them.",
        "match": [
            {"field": "category", "equals": "authorization"},
            {"field": "target.resource", "in": ["roles", "clusterroles"]},
            {"field": "action", "in": _WRITE},
            {"field": "outcome", "equals": "success"},
            {"field": "details.rules.verbs", "equals": "*"},
        ],
        "groupBy": ["actor.name", "target.namespace", "target.name"],
    },
    POLICY_CHANGED: {
        "severity": "critical",
        "summary": "{{ actor.name }} ran {{ action }} on AuditPolicy "
        "{{ target.namespace }}/{{ target.name }}",
        "description": "The policy that decides what is audited and where the trail goes "
        "was changed or deleted.",
        "match": [
            {"field": "target.resource", "equals": "auditpolicies"},
            {"field": "action", "in": ["update", "patch", "delete", "deletecollection"]},
            {"field": "outcome", "equals": "success"},
        ],
        "groupBy": ["actor.name", "target.namespace", "target.name"],
    },
    "AuditlockRepeatedAuthorizationFailures": {
        "severity": "warning",
        "summary": "{{ count }} refused requests by {{ actor.name }} within {{ window }}",
        "description": "Repeated 401/403 answers for one identity: probing, or a broken "
        "credential. Last: {{ action }} {{ target.resource }} {{ target.name }}.",
        "match": [
            {"field": "outcome", "equals": "failure"},
            {"field": "details.status_code", "in": ["401", "403"]},
        ],
        "groupBy": ["actor.name"],
        "threshold": {"count": 5, "windowSeconds": 60},
    },
}

# -- trail integrity: states ----------------------------------------------------------

STREAM_SILENT = "AuditlockStreamSilent"
CHECKPOINT_INVALID = "AuditlockCheckpointInvalid"
TRAIL_NOT_VERIFIED = "AuditlockTrailNotVerified"
RETENTION_LOCK_MISSING = "AuditlockRetentionLockMissing"
PODS_UNAUDITED = "AuditlockPodsUnaudited"
SPOOL_FILLING = "AuditlockSpoolFilling"
UPLOADS_FAILING = "AuditlockUploadsFailing"

STATE_SEVERITY = {
    STREAM_SILENT: "critical",
    CHECKPOINT_INVALID: "critical",
    TRAIL_NOT_VERIFIED: "critical",
    RETENTION_LOCK_MISSING: "critical",
    PODS_UNAUDITED: "warning",
    SPOOL_FILLING: "warning",
    UPLOADS_FAILING: "critical",
}
SPOOL_FILLING_RATIO = 0.8
UPLOADS_FAILING_SECONDS = 300.0
SILENT_HEARTBEATS = 2.0

ALL = (*EVENT_RULES, *STATE_SEVERITY)


def event_rules(
    disabled: frozenset[str] = frozenset(),
    *,
    ignore_actors: tuple[str, ...] = (),
    resolve_after: float = 300.0,
) -> list[Rule]:
    """The built-in event rules, compiled. `ignore_actors` are identities whose AuditPolicy
    writes are the system working as intended (the operator's own status and annotation
    patches)."""
    rules = []
    for name, spec in EVENT_RULES.items():
        if name in disabled:
            continue
        if ignore_actors and name == POLICY_CHANGED:
            spec = {
                **spec,
                "match": [
                    *spec["match"],
                    {"field": "actor.name", "in": list(ignore_actors), "negate": True},
                ],
            }
        spec = {**spec, "resolveAfterSeconds": resolve_after}
        rules.append(compile_rule(name, NAMESPACE, spec, key=f"{NAMESPACE}/{name}"))
    return rules
