"""Summary and description templates: event fields by name, and nothing else.

A template is text with placeholders `{{ actor.name }}`: an event field path (the same
paths as a policy's filters, policy/paths.py) or one of the alert's own values
(`ALERT_VALUES`: how many events matched, the window, the stream, the rule). There are no
expressions, filters or calls, so a rule's author cannot run code in the operator or the
collector, and an event cannot inject template syntax: values are substituted once,
never re-read as a template. Substituted text is escaped (ledger/escape.py) and cut to
MAX_VALUE_CHARS, so a hostile event cannot make an alert huge or smuggle control
characters into a pager. This module never imports pydantic (it runs in the collector).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from auditlock.ledger.escape import escape

MAX_TEMPLATE_LENGTH = 1024
MAX_VALUE_CHARS = 200
MAX_PLACEHOLDERS = 16
ALERT_VALUES = ("count", "window", "stream", "rule", "namespace", "silent_seconds")

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.:/-]{1,256})\s*\}\}")
_ANY_BRACES = re.compile(r"\{\{|\}\}")


def template_problem(text: str) -> str | None:
    """Why `text` is not a valid template, or None when it is."""
    from auditlock.policy.paths import path_problem  # the operator's side only

    names = _PLACEHOLDER.findall(text)
    if len(names) > MAX_PLACEHOLDERS:
        return f"at most {MAX_PLACEHOLDERS} placeholders in a template"
    leftover = _ANY_BRACES.search(_PLACEHOLDER.sub("", text))
    if leftover:
        return (
            f"template {text!r}: '{{{{' and '}}}}' only surround a field name, e.g. "
            "{{ actor.name }}; no expressions"
        )
    for name in names:
        if name in ALERT_VALUES:
            continue
        problem = path_problem(name)
        if problem:
            return f"template placeholder {{{{ {name} }}}}: {problem}; or one of " + ", ".join(
                ALERT_VALUES
            )
    return None


def render(text: str, lookup: Callable[[str], Any], values: Mapping[str, Any] | None = None) -> str:
    """`text` with every placeholder replaced by its value (empty when missing)."""
    values = values or {}

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values[name] if name in values else lookup(name)
        if value is None:
            return ""
        shown = value if isinstance(value, str) else str(value)
        if len(shown) > MAX_VALUE_CHARS:
            shown = shown[: MAX_VALUE_CHARS - 1] + "…"
        return escape(shown)

    return _PLACEHOLDER.sub(one, text)
