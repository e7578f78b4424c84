"""Policy filter: keep an event only if its category is selected and the include and
exclude rules (dotted field path + accepted values, as in the AuditPolicy) allow it."""

from __future__ import annotations

from typing import Any

from auditlock.ledger.vocabulary import CATEGORIES
from auditlock.sidecar.config import MatchRule, PipelineConfig


def lookup(event: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    node: Any = event
    for part in path.split("."):
        if type(node) is not dict:
            return None
        node = node.get(part)
    return node


class PolicyFilter:
    def __init__(self, config: PipelineConfig) -> None:
        self._categories = frozenset(config.categories)
        self._include = [(r.field, frozenset(r.values)) for r in config.include]
        self._exclude = [(r.field, frozenset(r.values)) for r in config.exclude]
        # Every category selected and no rules (the default): every valid event is kept
        # (normalize has checked its category), so the hot path can skip `keep`.
        self.keeps_everything = (
            self._categories >= frozenset(CATEGORIES) and not self._include and not self._exclude
        )

    def keep(self, event: dict[str, Any]) -> bool:
        if event["category"] not in self._categories:
            return False
        if self._include and not any(_matches(event, f, v) for f, v in self._include):
            return False
        return not (self._exclude and any(_matches(event, f, v) for f, v in self._exclude))


def _matches(event: dict[str, Any], field: str, values: frozenset[str]) -> bool:
    value = lookup(event, field)
    return value is not None and str(value) in values


__all__ = ["MatchRule", "PolicyFilter", "lookup"]
