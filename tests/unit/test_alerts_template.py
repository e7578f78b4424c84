"""Templates substitute event fields once, escaped and bounded; nothing else runs."""

from __future__ import annotations

from auditlock.alerts.rules import first_value
from auditlock.alerts.template import MAX_VALUE_CHARS, render, template_problem


def test_placeholders_are_fields_or_alert_values() -> None:
    event = {"actor": {"name": "alice"}, "target": {"name": "db"}}
    text = render(
        "{{actor.name}} read {{ target.name }} ({{ count }}x){{ details.x }}",
        lambda p: first_value(event, p),
        {"count": 3},
    )
    assert text == "alice read db (3x)"


def test_values_are_never_read_as_templates_and_are_escaped_and_cut() -> None:
    event = {"actor": {"name": "{{ count }}\x1b[2J\u202e" + "x" * 500}}
    text = render("{{ actor.name }}", lambda p: first_value(event, p), {"count": 1})
    assert text.startswith("{{ count }}\\x1b[2J\\u202e")
    assert len(text) <= MAX_VALUE_CHARS + 20


def test_problems_name_the_fix() -> None:
    assert template_problem("{{ actor.name }} ok") is None
    assert "no expressions" in (template_problem("{{ __import__('os') }}") or "")
    assert "no expressions" in (template_problem("{% for x in y %}{{") or "")
