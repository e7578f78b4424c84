"""Generate the AuditPolicy CustomResourceDefinition from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3 schema: every node has a `type`, no `$ref`,
no `anyOf` carrying types, `additionalProperties` only for maps. Pydantic emits JSON
Schema 2020-12 with `$defs`, `anyOf: [X, null]` for optional fields and `title`s, so
`structural_schema` rewrites it: it inlines references, unwraps optionals, keeps every
description (that is what `kubectl explain` prints) and keeps scalar defaults so the API
server fills them in.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from auditlock.policy.model import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    AuditPolicySpec,
    AuditPolicyStatus,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILENAME = f"{GROUP}_{PLURAL}.yaml"

# The keys a structural schema node may carry over from JSON Schema unchanged.
_KEPT = (
    "description",
    "type",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "x-kubernetes-validations",
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


def structural_schema(json_schema: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a structural OpenAPI v3 schema."""
    defs = json_schema.get("$defs", {})
    return _convert(json_schema, defs)


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {k: copy.deepcopy(node[k]) for k in _KEPT if k in node}
    if "default" in node and _is_scalar(node["default"]):
        out["default"] = node["default"]
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {name: _convert(sub, defs) for name, sub in props.items()}
        elif isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = _convert(node["additionalProperties"], defs)
    elif kind == "array":
        out["items"] = _convert(node["items"], defs)
    if "type" not in out:
        raise ValueError(f"schema node without a type cannot be structural: {node}")
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline `$ref` and unwrap `anyOf: [X, null]`, keeping the outer description."""
    outer_description = node.get("description")
    outer_default = node.get("default")
    has_default = "default" in node
    if "anyOf" in node:
        choices = [c for c in node["anyOf"] if c.get("type") != "null"]
        if len(choices) != 1:
            raise ValueError(f"only Optional[X] unions are supported in the CRD: {node}")
        node = choices[0]
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    node = dict(node)
    if outer_description is not None:
        node["description"] = outer_description
    if has_default:
        node["default"] = outer_default
    return node


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value is not None


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition manifest, as a dict."""
    spec_schema = structural_schema(AuditPolicySpec.model_json_schema(by_alias=True))
    status_schema = structural_schema(AuditPolicyStatus.model_json_schema(by_alias=True))
    schema = {
        "type": "object",
        "description": "AuditPolicy selects pods in its namespace, injects the auditlock "
        "collector into them and stores their tamper-evident audit trail in WORM object "
        "storage under a retention lock.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": "Kind of this object: AuditPolicy."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "auditlock"},
            "annotations": {
                "auditlock.io/generated-by": "auditlock crds (from auditlock.policy.model)"
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["auditlock"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER = (
    "# Generated by `auditlock crds` from src/auditlock/policy/model.py. Do not edit:\n"
    "# change the model and regenerate (tests/unit/test_policy_crd.py fails on drift).\n"
)


def render_crd_yaml() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def write_crds(directory: Path) -> list[Path]:
    """Write every generated CRD into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CRD_FILENAME
    path.write_text(render_crd_yaml(), encoding="utf-8")
    return [path]


def drifted_crds(directory: Path) -> list[Path]:
    """Paths in `directory` whose content differs from what the model generates."""
    path = directory / CRD_FILENAME
    if not path.exists() or path.read_text(encoding="utf-8") != render_crd_yaml():
        return [path]
    return []
