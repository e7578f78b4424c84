"""A rule's match, compiled once from its validated spec: tests on event fields.

Runs on the hot path of the collector and the operator, so it takes the spec as a plain
dict (camelCase, as `alerts.model.plain_spec` gives it and as the collector reads it
from its rules file) and never imports pydantic. A field path that crosses a list (an
RBAC rule's `details.rules.verbs`) tests every element: the condition passes when any
element passes, like a JSONPath wildcard.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auditlock.alerts.patterns import MAX_SUBJECT, compile_glob, compile_regex

Test = Callable[[str], bool]


def values_at(event: dict[str, Any], path: tuple[str, ...]) -> list[Any]:
    """Every value at a dotted path; a list on the way fans out to its elements."""
    nodes: list[Any] = [event]
    for part in path:
        found: list[Any] = []
        for node in nodes:
            if type(node) is dict:
                value = node.get(part)
                if value is None:
                    continue
                if type(value) is list:
                    found.extend(value)
                else:
                    found.append(value)
        if not found:
            return []
        nodes = found
    out: list[Any] = []
    for node in nodes:
        if type(node) is list:
            out.extend(node)
        else:
            out.append(node)
    return out


def first_value(event: dict[str, Any], path: str) -> Any:
    """The first value at a dotted path, or None (for templates and group labels)."""
    found = values_at(event, tuple(path.split(".")))
    return found[0] if found else None


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if type(value) is str else str(value)


@dataclass(frozen=True)
class FieldCondition:
    path: tuple[str, ...]
    test: Test
    negate: bool
    # The values the field must equal (equals/in, not negated): used to index rules.
    exact: frozenset[str] | None = None

    def holds(self, event: dict[str, Any]) -> bool:
        if len(self.path) == 1:  # the common case: a top-level member, no fan-out
            value = event.get(self.path[0])
            found = [] if value is None else (value if type(value) is list else [value])
        else:
            found = values_at(event, self.path)
        passed = False
        test = self.test
        for value in found:
            if type(value) is dict:
                continue
            if test(_text(value)):
                passed = True
                break
        return passed != self.negate


def compile_condition(spec: dict[str, Any]) -> FieldCondition:
    path = tuple(str(spec["field"]).split("."))
    negate = bool(spec.get("negate", False))
    exact: frozenset[str] | None = None
    test: Test
    if spec.get("equals") is not None:
        wanted = str(spec["equals"])
        exact = frozenset({wanted})
        test = wanted.__eq__
    elif spec.get("in") is not None:
        exact = frozenset(str(v) for v in spec["in"])
        test = exact.__contains__
    elif spec.get("glob") is not None:
        test = _bounded(compile_glob(str(spec["glob"])).match)
    elif spec.get("regex") is not None:
        test = _bounded(compile_regex(str(spec["regex"])).search)
    else:
        raise ValueError(f"condition on {spec['field']}: no test (equals, in, glob or regex)")
    return FieldCondition(path, test, negate, None if negate else exact)


def _bounded(find: Callable[[str], re.Match[str] | None]) -> Test:
    def test(text: str) -> bool:
        return find(text[:MAX_SUBJECT]) is not None

    return test


@dataclass(frozen=True)
class Threshold:
    count: int
    window: float


@dataclass(frozen=True)
class Rule:
    """One compiled rule. `key` is `<namespace>/<name>` (or `builtin/<name>`)."""

    key: str
    name: str
    namespace: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str]
    conditions: tuple[FieldCondition, ...]
    group_by: tuple[str, ...]
    threshold: Threshold | None
    resolve_after: float
    absence_seconds: float | None = None
    absence_streams: str = "*"
    # Namespaces whose events the rule sees: None for every namespace (built-ins and
    # rules in the operator's own namespace), else just the rule's.
    scope: frozenset[str] | None = None
    categories: frozenset[str] | None = field(default=None)
    actions: frozenset[str] | None = field(default=None)  # likewise for `action`
    # What the rule was compiled from: two compilations of one spec are the same rule
    # (their compiled tests are distinct objects), so state survives a reload.
    digest: str = ""

    def matches(self, event: dict[str, Any]) -> bool:
        # A plain loop: on the hot path it is faster than all() over a generator.
        for condition in self.conditions:  # noqa: SIM110
            if not condition.holds(event):
                return False
        return True


def compile_rule(
    name: str,
    namespace: str,
    spec: dict[str, Any],
    *,
    scope: frozenset[str] | None = None,
    key: str | None = None,
) -> Rule:
    """Compile a validated spec (camelCase plain dict). Raises ValueError on a pattern
    admission would have refused (a rules file edited by hand)."""
    conditions = tuple(compile_condition(c) for c in spec.get("match") or [])
    categories = next(
        (c.exact for c in conditions if c.path == ("category",) and c.exact is not None), None
    )
    actions = next(
        (c.exact for c in conditions if c.path == ("action",) and c.exact is not None), None
    )
    threshold_spec = spec.get("threshold")
    threshold = (
        Threshold(int(threshold_spec["count"]), float(threshold_spec["windowSeconds"]))
        if threshold_spec
        else None
    )
    absence = spec.get("absence")
    digest = hashlib.sha256(
        json.dumps([name, namespace, spec, sorted(scope or ["*"])], sort_keys=True).encode()
    ).hexdigest()
    return Rule(
        key=key or f"{namespace}/{name}",
        name=name,
        namespace=namespace,
        severity=str(spec.get("severity", "warning")),
        summary=str(spec["summary"]),
        description=str(spec.get("description", "")),
        labels={str(k): str(v) for k, v in (spec.get("labels") or {}).items()},
        conditions=conditions,
        group_by=tuple(str(p) for p in spec.get("groupBy") or []),
        threshold=threshold,
        resolve_after=float(spec.get("resolveAfterSeconds", 300)),
        absence_seconds=float(absence["forSeconds"]) if absence else None,
        absence_streams=str(absence.get("streams", "*")) if absence else "*",
        scope=scope,
        categories=categories,
        actions=actions,
        digest=digest,
    )
