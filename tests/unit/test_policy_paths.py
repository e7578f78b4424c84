"""Filter and redaction paths of an AuditPolicy name real event fields (policy/paths.py).

The path lists come from the event model; here they are checked against the published
event schema (docs/event-schema.json) and against what the collector really does with a
path: the sidecar's own filter and redaction stages on a normalized event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from auditlock.ledger.event import validate_event
from auditlock.policy import paths
from auditlock.policy.model import parse_spec
from auditlock.sidecar.config import MatchRule, PipelineConfig, SourceIdentity
from auditlock.sidecar.pipeline import Pipeline
from auditlock.sidecar.pipeline.filter import lookup
from tests.helpers.events import sample

ROOT = Path(__file__).resolve().parents[2]


def _spec(**extra: Any) -> dict[str, Any]:
    return {
        "destination": {"file": {"path": "/data"}},
        "retention": {"days": 1},
        **extra,
    }


def _schema_leaves() -> tuple[set[str], set[str]]:
    """(leaf paths, free-form members) read from the published JSON Schema."""
    schema = json.loads((ROOT / "docs" / "event-schema.json").read_text())
    defs = schema["$defs"]
    leaves: set[str] = set()
    open_members: set[str] = set()

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, sub in node["properties"].items():
            choices = sub.get("anyOf", [sub])
            ref = next((c["$ref"] for c in choices if "$ref" in c), None)
            kinds = {c.get("type") for c in choices}
            if ref is not None:
                walk(defs[ref.rsplit("/", 1)[-1]], f"{prefix}{name}.")
            elif "object" in kinds:
                open_members.add(prefix + name)
            else:
                leaves.add(prefix + name)

    walk(schema, "")
    return leaves, open_members


def _event() -> dict[str, Any]:
    """An event with every member set, as the collector stores it."""
    event = sample()
    event["source"] = {**event["source"], "node": "n1"}
    event["details"] = {"attributes": {"card_number": "4111111111111111"}}
    return validate_event(event)


def test_paths_are_the_leaves_of_the_published_event_schema() -> None:
    leaves, open_members = _schema_leaves()
    assert set(paths.FIELD_PATHS) == leaves
    assert set(paths.OPEN_MEMBERS) == open_members == {"details"}


def test_every_field_path_finds_a_value_in_a_stored_event() -> None:
    event = _event()
    for path in paths.FIELD_PATHS:
        assert lookup(event, path) is not None, path


def test_redactable_means_the_redacted_event_is_still_valid() -> None:
    for path in paths.FIELD_PATHS:
        event = _event()
        *parents, last = path.split(".")
        node = event
        for part in parents:
            node[part] = dict(node[part])
            node = node[part]
        node[last] = paths.MARKER
        try:
            validate_event(event)
            valid = True
        except Exception:
            valid = False
        assert valid == (path in paths.REDACTABLE_PATHS), path
    assert set(paths.UNREDACTABLE_PATHS) == {
        "id",
        "time",
        "category",
        "outcome",
        "actor.kind",
        "actor.ip",
    }


def test_an_app_field_outside_details_is_refused_with_the_details_hint() -> None:
    with pytest.raises(ValidationError) as refused:
        parse_spec(_spec(redaction={"fields": ["attributes.card_number"]}))
    text = str(refused.value)
    assert "redaction.fields.0" in text
    assert "attributes.card_number is not an event field" in text
    assert "so this is probably details.attributes.card_number" in text


def test_the_operator_reports_the_same_words_in_the_policy_status() -> None:
    """For API servers without CEL: reconcile's InvalidSpec message."""
    from auditlock.operator.reconcile import validation_message

    with pytest.raises(ValidationError) as refused:
        parse_spec(_spec(redaction={"fields": ["attributes.card_number"]}))
    message = validation_message(refused.value)
    problem = paths.redaction_problem("attributes.card_number")
    assert message == f"spec.redaction.fields.0: {problem}."


def test_a_misspelt_member_field_is_refused_without_the_details_hint() -> None:
    with pytest.raises(ValidationError) as refused:
        parse_spec(_spec(filters={"include": [{"field": "actor.user", "values": ["alice"]}]}))
    text = str(refused.value)
    assert "filters.include.0.field" in text and "actor.user is not an event field" in text
    assert "actor.name" in text and "probably" not in text


@pytest.mark.parametrize("path", ["details", "details.", "details..x", "details.a.", "actor"])
def test_objects_and_empty_segments_name_no_value(path: str) -> None:
    with pytest.raises(ValidationError, match="is not an event field"):
        parse_spec(_spec(filters={"exclude": [{"field": path, "values": ["x"]}]}))


@pytest.mark.parametrize("path", ["id", "time", "category", "outcome", "actor.kind", "actor.ip"])
def test_fields_whose_format_excludes_the_marker_cannot_be_redacted(path: str) -> None:
    with pytest.raises(ValidationError, match=f"{path} cannot be redacted"):
        parse_spec(_spec(redaction={"fields": [path]}))
    # ...but they can be filtered on.
    parse_spec(_spec(filters={"exclude": [{"field": path, "values": ["x"]}]}))


def test_good_paths_are_accepted() -> None:
    spec = parse_spec(
        _spec(
            filters={
                "include": [{"field": "category", "values": ["data"]}],
                "exclude": [{"field": "details.intake.tag", "values": ["orders.debug"]}],
            },
            redaction={"fields": ["actor.name", "details.attributes.card_number"]},
        )
    )
    assert spec.redaction.fields == ["actor.name", "details.attributes.card_number"]


def test_path_lists_are_bounded() -> None:
    with pytest.raises(ValidationError, match="at most 64"):
        parse_spec(_spec(redaction={"fields": ["details.a"] * 65}))
    with pytest.raises(ValidationError, match="at most 256"):
        parse_spec(_spec(redaction={"fields": ["details." + "a" * 250]}))


_KEY = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)
_DETAILS = st.recursive(
    st.text(max_size=5) | st.integers(-5, 5),
    lambda inner: st.dictionaries(_KEY, inner, min_size=1, max_size=3),
    max_leaves=8,
).filter(lambda d: isinstance(d, dict))


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for key, sub in node.items() for p in _leaf_paths(sub, f"{prefix}{key}.")]
    return [prefix[:-1]]


@given(_DETAILS, st.lists(_KEY, min_size=1, max_size=3).map(".".join))
def test_every_stored_value_is_addressable_and_refused_paths_reach_nothing(
    details: dict[str, Any], unknown: str
) -> None:
    """No false refusals: every leaf of a stored event (details included) is a path a
    policy may name, and the collector's filter and redaction act on it. No false
    acceptance: a path outside the schema's members finds nothing in a stored event."""
    event = _event()
    event["details"] = details
    event = validate_event(event)
    for path in _leaf_paths(event):
        assert paths.path_problem(path) is None, path
        value = lookup(event, path)
        pipeline = Pipeline(
            PipelineConfig(include=[MatchRule(field=path, values=[str(value)])], redact=[path]),
            SourceIdentity(),
        )
        assert pipeline.filter.keep(event), path
        copy = dict(event)
        assert pipeline.redactor.apply(copy) == 1 and lookup(copy, path) == paths.MARKER
    if unknown.split(".")[0] not in paths.MEMBERS:
        assert paths.path_problem(unknown) is not None
        assert lookup(event, unknown) is None
