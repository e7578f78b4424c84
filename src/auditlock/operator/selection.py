"""Kubernetes label-selector semantics, for deciding whether a policy selects a pod."""

from __future__ import annotations

from collections.abc import Mapping

from auditlock.policy.model import PodSelector


def matches(selector: PodSelector, labels: Mapping[str, str]) -> bool:
    """True when `labels` satisfy every matchLabels pair and every matchExpression."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
        if req.operator == "In" and (not present or labels[req.key] not in req.values):
            return False
        # NotIn also matches pods without the key, as in Kubernetes.
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
    return True


def to_label_selector_string(selector: PodSelector) -> str:
    """The selector in the API's `labelSelector=` query syntax."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        if req.operator == "Exists":
            parts.append(req.key)
        elif req.operator == "DoesNotExist":
            parts.append(f"!{req.key}")
        else:
            op = "in" if req.operator == "In" else "notin"
            parts.append(f"{req.key} {op} ({','.join(req.values)})")
    return ",".join(parts)
