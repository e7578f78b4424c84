"""Generate the AuditPolicy CustomResourceDefinition from the pydantic models
(the structural rewrite and the manifest's frame: policy/crd_schema.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditlock.policy.crd_schema import GeneratedCrd
from auditlock.policy.model import (
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    AuditPolicySpec,
    AuditPolicyStatus,
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the policy is fully in force.",
    },
    {
        "name": "Pods",
        "type": "integer",
        "jsonPath": ".status.podsInjected",
        "description": "Pods carrying this policy's collector.",
    },
    {
        "name": "Unaudited",
        "type": "integer",
        "jsonPath": ".status.podsUnaudited",
        "description": "Selected pods running without a collector (AllPodsAudited says "
        "which and why).",
    },
    {
        "name": "Destination",
        "type": "string",
        "jsonPath": ".status.destination",
        "description": "Where the ledger is stored.",
    },
    {
        "name": "Retention",
        "type": "string",
        "jsonPath": ".status.retention",
        "description": "Retention period and lock mode.",
    },
    {
        "name": "Locked",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="DestinationLocked")].status',
        "description": "Whether the destination enforces the retention lock.",
    },
    {
        "name": "Last-Checkpoint",
        "type": "date",
        "jsonPath": ".status.lastCheckpoint",
        "description": "Age of the newest signed checkpoint in the destination.",
    },
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    },
    {
        "name": "Selected",
        "type": "integer",
        "priority": 1,
        "jsonPath": ".status.podsSelected",
        "description": "Running pods the selector matches.",
    },
    {
        "name": "Stale",
        "type": "integer",
        "priority": 1,
        "jsonPath": ".status.podsStale",
        "description": "Injected pods running an older collector configuration.",
    },
    {
        "name": "Key",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.keyFingerprint",
        "description": "Signing key id (SHA-256 of the public key).",
    },
]


CRD = GeneratedCrd(
    kind=KIND,
    plural=PLURAL,
    singular=SINGULAR,
    short_names=SHORT_NAMES,
    description="AuditPolicy selects pods in its namespace, injects the auditlock "
    "collector into them and stores their tamper-evident audit trail in WORM object "
    "storage under a retention lock.",
    spec=AuditPolicySpec,
    status=AuditPolicyStatus,
    printer_columns=PRINTER_COLUMNS,
    model="auditlock.policy.model",
    drift_test="tests/unit/test_policy_crd.py",
)
CRD_FILENAME = CRD.filename
build_crd = CRD.manifest
render_crd_yaml = CRD.render


def drifted_crds(directory: Path) -> list[Path]:
    """The AuditPolicy CRD's file in `directory`, if it differs from what the model
    generates."""
    return [directory / CRD_FILENAME] if CRD.drifted(directory) else []
