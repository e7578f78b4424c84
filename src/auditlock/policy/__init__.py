"""The AuditPolicy custom resource: its pydantic model and the CRD generated from it."""

from auditlock.policy.model import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    AuditPolicySpec,
    AuditPolicyStatus,
    Condition,
    parse_spec,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "AuditPolicySpec",
    "AuditPolicyStatus",
    "Condition",
    "parse_spec",
]
