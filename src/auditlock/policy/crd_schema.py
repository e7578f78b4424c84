"""A CustomResourceDefinition generated from pydantic models (AuditPolicy, AuditAlertRule).

Kubernetes wants a *structural* OpenAPI v3 schema: every node has a `type`, no `$ref`,
no `anyOf` carrying types, `additionalProperties` only for maps. Pydantic emits JSON
Schema 2020-12 with `$defs`, `anyOf: [X, null]` for optional fields and `title`s, so
`structural_schema` rewrites it: it inlines references, unwraps optionals, keeps every
description (that is what `kubectl explain` prints) and keeps scalar defaults so the API
server fills them in. `custom_resource_definition` puts that schema in the manifest
every auditlock kind shares: namespaced, one served version with a status subresource.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from auditlock.policy.model import GROUP, VERSION

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


def custom_resource_definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...] | list[str],
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    printer_columns: list[dict[str, Any]],
    generated_from: str,
) -> dict[str, Any]:
    """The whole manifest of the `kind` CRD, its schema generated from `spec` and `status`.

    `generated_from` names the model module in the generated-by annotation."""
    schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": f"Kind of this object: {kind}."},
            "metadata": {"type": "object"},
            "spec": structural_schema(spec.model_json_schema(by_alias=True)),
            "status": structural_schema(status.model_json_schema(by_alias=True)),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "auditlock"},
            "annotations": {"auditlock.io/generated-by": f"auditlock crds (from {generated_from})"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": ["auditlock"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


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
