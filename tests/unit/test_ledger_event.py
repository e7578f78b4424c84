"""The event model, the fast normalizer, their agreement, and the published schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.errors import EventError
from auditlock.ledger.event import event_json_schema, validate_event
from auditlock.ledger.normalize import normalize_event
from tests.helpers.events import sample, set_path

from .ledger_strategies import bad_values, events

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "event-schema.json"


def test_valid_event_is_normalized_to_utc_nanoseconds() -> None:
    event = validate_event(sample())
    assert event["time"] == "2026-11-29T15:08:52.500000000Z"
    assert normalize_event(sample()) == event


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("details.price", 1.5, "floats are not allowed"),
        ("details.big", 2**53, "2**53"),
        ("actor.ip", "300.1.1.1", "not an IPv4 or IPv6 address"),
        ("actor.kind", "robot", "must be one of"),
        ("time", "2026-02-30T00:00:00Z", "RFC 3339"),
        ("time", "2026-01-01T00:00:60Z", "leap second"),
        ("category", "misc", "must be one of"),
        ("action", "", "empty"),
        ("target.resource", "\ud800", "surrogate"),
    ],
)
def test_invalid_field_names_the_path_and_reason(path: str, value: Any, fragment: str) -> None:
    raw = sample()
    part: Any = raw
    keys = path.split(".")
    for key in keys[:-1]:
        part = part[key]
    part[keys[-1]] = value
    for validate in (validate_event, normalize_event):
        with pytest.raises(EventError) as caught:
            validate(raw)
        problems = caught.value.problems
        # The model reports the member it validates (details as a whole); both name where.
        assert any(path.startswith(p) for p, _ in problems), problems
    with pytest.raises(EventError) as caught:
        normalize_event(raw)
    assert caught.value.problems[0][0] == path
    assert fragment in caught.value.problems[0][1]


def test_unknown_member_and_missing_member_are_named() -> None:
    raw = sample()
    raw["extra"] = 1
    with pytest.raises(EventError, match="extra"):
        normalize_event(raw)
    raw = sample()
    del raw["actor"]["name"]
    with pytest.raises(EventError, match=r"actor\.name"):
        normalize_event(raw)
    with pytest.raises(EventError, match=r"actor\.name"):
        validate_event(raw)


@settings(max_examples=300, deadline=None)
@given(events())
def test_normalizer_agrees_with_the_model_on_valid_events(raw: dict[str, Any]) -> None:
    assert normalize_event(copy.deepcopy(raw)) == validate_event(copy.deepcopy(raw))


_PATHS = [
    ("id",),
    ("time",),
    ("category",),
    ("action",),
    ("outcome",),
    ("actor",),
    ("actor", "kind"),
    ("actor", "name"),
    ("actor", "ip"),
    ("target",),
    ("target", "resource"),
    ("target", "name"),
    ("source",),
    ("source", "pod"),
    ("correlation",),
    ("correlation", "trace_id"),
    ("details",),
    ("details", "x"),
    ("details", "x", "y"),
    ("extra",),
]


@settings(max_examples=500, deadline=None)
@given(events(), st.sampled_from(_PATHS), bad_values)
def test_normalizer_and_model_accept_and_reject_the_same_events(
    raw: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    set_path(raw, path, value)
    outcomes = []
    for validate in (validate_event, normalize_event):
        try:
            outcomes.append(("ok", validate(copy.deepcopy(raw))))
        except EventError as exc:
            assert exc.problems and all(reason for _, reason in exc.problems)
            outcomes.append(("error", None))
    assert outcomes[0] == outcomes[1]


def test_published_schema_matches_the_model() -> None:
    # Regenerate with: python -m auditlock.ledger.schema > docs/event-schema.json
    generated = json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA.read_text() == generated, "docs/event-schema.json drifted from AuditEvent"
