"""The SOC 2 control map: which part of the report is evidence for which control.

The criteria are the AICPA's 2017 Trust Services Criteria (revised points of focus, 2022).
The map links, it does not judge: whether the evidence satisfies a control is the
auditor's call. Each entry names the sections of the report (their HTML ids) an auditor
reads for that control, and a one-line count drawn from the report's data.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass

from auditlock.report.model import ReportData


@dataclass(frozen=True)
class Control:
    id: str
    asks: str
    evidence: tuple[tuple[str, str], ...]  # (section id, what it shows)
    count: Callable[[ReportData], str]


def _n(data: ReportData, table: str, one: str, many: str) -> str:
    """How many rows a privileged-change table has, the ones not shown included."""
    rows: Sized = {
        "table-rbac": data.rbac_changes,
        "table-policy": data.policy_changes,
        "table-exec": data.exec_sessions,
    }[table]
    n = len(rows) + data.truncated.get(table, 0)
    return f"{n:,} {one if n == 1 else many}"


CONTROLS: tuple[Control, ...] = (
    Control(
        "CC6.1",
        "Logical access to information assets is restricted and the records of it are "
        "protected from change.",
        (
            ("plot-secret-reads", "who read Secrets"),
            ("plot-top-actors", "who acted, ranked"),
            ("verification", "the trail's integrity, signing keys and retention locks"),
        ),
        lambda d: (
            f"{sum(n for _, n in d.secret_reads):,} Secret reads by "
            f"{len(d.secret_reads):,} actors; {d.verification.events_verified:,} events verified"
        ),
    ),
    Control(
        "CC6.2",
        "Credentials and access are granted only after authorization, and grants are recorded.",
        (("table-rbac", "RBAC grants and changes: subjects, role, who made them"),),
        lambda d: _n(d, "table-rbac", "RBAC change", "RBAC changes"),
    ),
    Control(
        "CC6.3",
        "Access is role-based and least-privilege; changes to roles and refused requests "
        "are visible.",
        (
            ("table-rbac", "role and binding changes"),
            ("plot-failures", "denials (401/403, forbid) over time"),
        ),
        lambda d: (
            f"{_n(d, 'table-rbac', 'role change', 'role changes')}; "
            f"{sum(n for _, k, n in d.failures if k == 'denial'):,} denials"
        ),
    ),
    Control(
        "CC7.2",
        "System components are monitored for anomalies; monitoring itself is continuous.",
        (
            ("plot-events-per-hour", "activity per hour by category"),
            ("plot-failures", "failures and denials over time"),
            ("table-exec", "interactive sessions into pods (exec, attach, port-forward)"),
            ("plot-checkpoint-cadence", "signed checkpoints per stream, gaps highlighted"),
        ),
        lambda d: (
            f"{d.events:,} events; "
            f"{_n(d, 'table-exec', 'exec session', 'exec sessions')}; "
            f"{len(d.verification.gaps):,} gaps"
        ),
    ),
    Control(
        "CC7.3",
        "Security events are evaluated; failures of the audit trail itself are found.",
        (
            ("verification", "verification findings, warnings and gaps"),
            ("plot-failures", "failed and refused requests"),
        ),
        lambda d: (
            f"verification {d.verification.result}: "
            f"{len(d.verification.findings):,} findings, {len(d.verification.warnings):,} "
            f"warnings; {sum(n for _, _, n in d.failures):,} failed or refused events"
        ),
    ),
    Control(
        "CC8.1",
        "Changes to infrastructure and configuration are authorized, recorded and traceable.",
        (
            ("plot-config-timeline", "configuration changes over time"),
            ("table-policy", "AuditPolicy changes: who changed what the trail records"),
        ),
        lambda d: (
            f"{sum(r[3] for r in d.config_timeline):,} configuration changes; "
            f"{_n(d, 'table-policy', 'AuditPolicy change', 'AuditPolicy changes')}"
        ),
    ),
)
