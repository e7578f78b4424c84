"""Every AuditPolicy setting reaches the collector through the one mapping
(operator/sidecar_config.py), unless it is one the operator itself acts on.

The test walks the policy model, so a setting added to it later is covered without
touching this file: it fails until the setting changes the collector's `SidecarConfig`
(through `render`, validated by the collector's own front end and carried unchanged
through the handoff), or is listed in OPERATOR_SIDE with the place that uses it.
docs/architecture.md, "How to add a policy setting", is the recipe.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from auditlock.operator.sidecar_config import render
from auditlock.policy.model import AuditPolicySpec, parse_spec
from auditlock.sidecar.config import SidecarConfig, config_from_dict, config_json
from auditlock.sidecar.handoff import config_from_validated

# Settings the collector never sees, by their camelCase path, with who acts on them.
OPERATOR_SIDE = {
    "selector.matchLabels": "admission selects the pods (operator/selection.py)",
    "selector.matchExpressions": "admission selects the pods (operator/selection.py)",
    "enforcement": "admission refuses pods without the collector (operator/admission.py)",
    "sidecar.image": "injection builds the container (operator/injection.py)",
    "sidecar.resources.requests.cpu": "injection builds the container",
    "sidecar.resources.requests.memory": "injection builds the container",
    "sidecar.resources.limits.cpu": "injection builds the container",
    "sidecar.resources.limits.memory": "injection builds the container",
    "sources.cluster.auditWebhook": "the operator's own capture (operator/capture.py)",
    "sources.cluster.watch": "the operator's watch fallback (operator/handlers.py)",
    # Credentials reach the collector as environment and a mounted file from the
    # Secret (operator/injection.py), never through its config file.
    "destination.s3.credentialsSecret.name": "injection mounts the Secret",
    "destination.gcs.credentialsSecret.name": "injection mounts the Secret",
}

BASES: dict[str, dict[str, Any]] = {
    "s3": {"s3": {"bucket": "audit", "prefix": "trail"}},
    "gcs": {"gcs": {"bucket": "audit", "prefix": "trail"}},
    "file": {"file": {"path": "/var/lib/auditlock/ledger"}},
}

# A value other than the base's for the settings whose type says too little to pick one.
VARIANTS: dict[str, Any] = {
    "categories": ["access", "data"],
    "filters.include": [{"field": "actor.name", "values": ["alice"]}],
    "filters.exclude": [{"field": "actor.name", "values": ["system:kube-proxy"]}],
    "redaction.fields": ["details.password"],
    "sources.configFiles.paths": ["/etc/app"],
    "destination.s3.bucket": "audit-two",
    "destination.s3.prefix": "elsewhere",
    "destination.s3.region": "eu-west-1",
    "destination.s3.endpoint": "http://seaweedfs.storage:8333",
    "destination.gcs.bucket": "audit-two",
    "destination.gcs.prefix": "elsewhere",
    "destination.gcs.endpoint": "http://fake-gcs.storage:4443",
    "destination.file.path": "/var/lib/auditlock/other",
}


def _unwrap(annotation: Any) -> Any:
    """X | None -> X."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def settings(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, list[str], Any]]:
    """(camelCase path, Python attribute path, annotation) of every leaf setting."""
    for name, info in model.model_fields.items():
        wire = info.alias or name
        path = f"{prefix}{wire}"
        annotation = _unwrap(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub_path, attrs, leaf in settings(annotation, path + "."):
                yield sub_path, [name, *attrs], leaf
        else:
            yield path, [name], annotation


def _base(path: str) -> dict[str, Any]:
    kind = path.split(".")[1] if path.startswith("destination.") else "s3"
    return {
        "selector": {"matchLabels": {"app": "api"}},
        "destination": BASES[kind],
        "retention": {"days": 30},
    }


def _current(spec: AuditPolicySpec, attrs: list[str]) -> Any:
    value: Any = spec
    for attr in attrs:
        value = getattr(value, attr)
    return value


def _other_value(path: str, annotation: Any, current: Any) -> Any:
    if path in VARIANTS:
        return VARIANTS[path]
    if annotation is bool:
        return not current
    if typing.get_origin(annotation) is Literal:
        return next(choice for choice in typing.get_args(annotation) if choice != current)
    if annotation is int:
        return current + 1
    raise AssertionError(
        f"no other value known for the policy setting {path}: add one to VARIANTS (and map "
        "it in operator/sidecar_config.py), or list it in OPERATOR_SIDE"
    )


def _with(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(spec))
    node = changed
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return changed


def _collector(spec: dict[str, Any]) -> SidecarConfig:
    """What the collector runs with: the front end's validation, then the handoff."""
    config = config_from_dict(render(parse_spec(spec), cluster="c"), environ={})
    handed_over = config_from_validated(json.loads(config_json(config)))
    assert handed_over == config, "the handoff must carry every setting unchanged"
    return handed_over


ALL_SETTINGS = sorted(settings(AuditPolicySpec))
COLLECTOR_SETTINGS = [
    pytest.param(path, attrs, annotation, id=path)
    for path, attrs, annotation in ALL_SETTINGS
    if path not in OPERATOR_SIDE
]


def test_the_operator_side_list_names_only_real_settings() -> None:
    assert set(OPERATOR_SIDE) <= {path for path, _, _ in ALL_SETTINGS}
    assert set(VARIANTS) <= {path for path, _, _ in ALL_SETTINGS} - set(OPERATOR_SIDE)


@pytest.mark.parametrize(("path", "attrs", "annotation"), COLLECTOR_SETTINGS)
def test_every_policy_setting_reaches_the_collector_through_the_one_mapping(
    path: str, attrs: list[str], annotation: Any
) -> None:
    base = _base(path)
    current = _current(parse_spec(base), attrs)
    changed = _with(base, path, _other_value(path, annotation, current))
    assert _current(parse_spec(changed), attrs) != current, f"{path}: the variant is the base"
    assert _collector(changed) != _collector(base), (
        f"the policy setting {path} does not reach the collector: map it in "
        "operator/sidecar_config.py, or list it in OPERATOR_SIDE with who acts on it"
    )
