"""Generate the AuditAlertRule CustomResourceDefinition from the pydantic models.

The same structural rewrite and manifest as the AuditPolicy CRD (policy/crd_schema.py):
every description kept for `kubectl explain`, scalar defaults kept so the API server
fills them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditlock.alerts.model import (
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    AuditAlertRuleSpec,
    AuditAlertRuleStatus,
)
from auditlock.policy.crd_schema import (
    crd_drifted,
    crd_yaml,
    custom_resource_definition,
    write_crd,
)
from auditlock.policy.model import GROUP

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILENAME = f"{GROUP}_{PLURAL}.yaml"

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


def build_rule_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition manifest, as a dict."""
    return custom_resource_definition(
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
        generated_from="auditlock.alerts.model",
    )


def render_rule_crd_yaml() -> str:
    return crd_yaml(
        build_rule_crd(),
        model_file="src/auditlock/alerts/model.py",
        drift_test="tests/unit/test_alerts_model.py",
    )


def write_rule_crd(directory: Path) -> Path:
    return write_crd(directory, CRD_FILENAME, render_rule_crd_yaml())


def rule_crd_drifted(directory: Path) -> bool:
    return crd_drifted(directory, CRD_FILENAME, render_rule_crd_yaml())
