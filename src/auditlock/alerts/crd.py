"""The AuditAlertRule CustomResourceDefinition, generated from the pydantic models as the
AuditPolicy one is (policy/crd_schema.py): every description kept for `kubectl explain`,
scalar defaults kept so the API server fills them in.
"""

from __future__ import annotations

from typing import Any

from auditlock.alerts.model import (
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    AuditAlertRuleSpec,
    AuditAlertRuleStatus,
)
from auditlock.policy.crd_schema import GeneratedCrd

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the rule is valid and evaluated.",
    },
    {
        "name": "Severity",
        "type": "string",
        "jsonPath": ".spec.severity",
        "description": "critical, warning or info.",
    },
    {
        "name": "Firing",
        "type": "integer",
        "jsonPath": ".status.firing",
        "description": "Alerts of this rule firing now (operator-evaluated).",
    },
    {
        "name": "Last-Fired",
        "type": "date",
        "jsonPath": ".status.lastFired",
        "description": "When the rule last fired.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Summary",
        "type": "string",
        "priority": 1,
        "jsonPath": ".spec.summary",
        "description": "The alert's summary template.",
    },
]


RULE_CRD = GeneratedCrd(
    kind=KIND,
    plural=PLURAL,
    singular=SINGULAR,
    short_names=SHORT_NAMES,
    description="AuditAlertRule raises an alert on audit events of its namespace (a "
    "match on event fields, optionally counted over a sliding window) or on a silent "
    "stream, delivered to Alertmanager, Kubernetes Events and webhooks and recorded "
    "as a signed alert event in the trail.",
    spec=AuditAlertRuleSpec,
    status=AuditAlertRuleStatus,
    printer_columns=PRINTER_COLUMNS,
    model="auditlock.alerts.model",
    drift_test="tests/unit/test_alerts_model.py",
)
CRD_FILENAME = RULE_CRD.filename
build_rule_crd = RULE_CRD.manifest
rule_crd_drifted = RULE_CRD.drifted
