"""The fast normalizer's shortcuts: each only accepts what the full rules accept.

A once-checked `source` (check_source → normalize_event(..., checked_source=...)) is used
only for that very object; an event carrying its own `source` is still checked. A time in
an already-seen canonical second skips the full parse, but not the check of its digits.
Plain `details` skip check_json only when check_json would accept them.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.errors import EventError
from auditlock.ledger.event import validate_event
from auditlock.ledger.normalize import check_source, normalize_event, plain_json
from auditlock.ledger.values import ValueProblem, check_json
from tests.helpers.events import set_path, small

from .ledger_strategies import bad_values, events, json_values, times

SOURCE = {"cluster": "c1", "namespace": "shop", "pod": "api-1", "container": "api"}


def sample(source: Any) -> dict[str, Any]:
    return small(id="evt-1", time="2026-11-29T15:08:52.123456789Z", source=source)


def problems(raw: dict[str, Any], checked: dict[str, Any] | None = None) -> list[Any]:
    with pytest.raises(EventError) as caught:
        normalize_event(raw, checked)
    return caught.value.problems


def test_checked_source_is_used_for_that_very_object_only() -> None:
    checked = check_source(SOURCE)
    assert checked == SOURCE
    event = normalize_event(sample(checked), checked)
    assert event["source"] is checked
    # An equal but different object goes through the full check (and is copied).
    event = normalize_event(sample(dict(SOURCE)), checked)
    assert event["source"] == SOURCE and event["source"] is not checked


@pytest.mark.parametrize(
    ("source", "path", "fragment"),
    [
        ({"pod": "\ud800"}, "source.pod", "surrogate"),
        ({"pod": ""}, "source.pod", "empty"),
        ({"pod": "x" * 1025}, "source.pod", "longer than"),
        ({"pod": 7}, "source.pod", "must be a string"),
        ({"zone": "a"}, "source.zone", "unknown member"),
        ("c1", "source", "must be a JSON object"),
        (None, "source", "missing"),
    ],
)
def test_an_event_carrying_its_own_source_is_still_checked(
    source: Any, path: str, fragment: str
) -> None:
    checked = check_source(SOURCE)
    expected = problems(sample(copy.deepcopy(source)))
    assert problems(sample(copy.deepcopy(source)), checked) == expected
    assert expected[0][0] == path and fragment in expected[0][1]
    with pytest.raises(EventError):
        validate_event(sample(copy.deepcopy(source)))


def test_check_source_applies_the_event_rules() -> None:
    assert check_source({"pod": "p", "node": None}) == {"pod": "p"}
    with pytest.raises(EventError) as caught:
        check_source({"pod": "\ud800"})
    assert caught.value.problems == problems(sample({"pod": "\ud800"}))
    with pytest.raises(EventError):
        check_source({"region": "x"})


_PATHS = [
    ("time",),
    ("actor", "name"),
    ("target", "resource"),
    ("source",),
    ("source", "pod"),
    ("source", "extra"),
    ("correlation", "trace_id"),
    ("details", "x"),
    ("details", "x", "y"),
]


@settings(max_examples=400, deadline=None)
@given(events(), st.sampled_from(_PATHS), bad_values, st.booleans())
def test_with_a_checked_source_the_normalizer_still_agrees_with_the_model(
    raw: dict[str, Any], path: tuple[str, ...], value: Any, mutate: bool
) -> None:
    try:
        checked: dict[str, Any] | None = check_source(raw["source"])
    except EventError:
        checked = None
    else:
        raw["source"] = checked
    if mutate:
        if path[0] == "source" and isinstance(raw.get("source"), dict):
            raw["source"] = dict(raw["source"])  # the event brings its own source now
        set_path(raw, path, value)
    mine = copy.deepcopy(raw)
    mine["source"] = raw["source"]  # keep the identity the fast path looks for
    try:
        expected: Any = validate_event(copy.deepcopy(raw))
    except EventError:
        expected = "error"
    try:
        got: Any = normalize_event(mine, checked)
    except EventError as exc:
        assert exc.problems == problems(copy.deepcopy(raw))  # same path and reason
        got = "error"
    assert got == expected


def _time_by_model_and_by_normalizer(raw: dict[str, Any]) -> tuple[Any, Any, str | None]:
    """The time the model and the normalizer each make of `raw` ("error" when refused),
    and the member the normalizer's first problem names."""
    try:
        expected: Any = validate_event(copy.deepcopy(raw))["time"]
    except EventError:
        expected = "error"
    try:
        return expected, normalize_event(raw)["time"], None
    except EventError as exc:
        return expected, "error", exc.problems[0][0]


@pytest.mark.parametrize(
    "later",
    [
        "2026-11-29T15:08:52.12345678\u0663Z",  # an Arabic-Indic digit: isdigit() is True
        "2026-11-29T15:08:52.12345678xZ",
        "2026-11-29T15:08:52.1234567890",
        "2026-11-29T15:08:52.123456789z",  # valid, but not canonical: normalized
        "2026-11-29T15:08:52.123456789+01:00",
        "2026-11-29T15:08:52.000000001Z",
    ],
)
def test_a_time_in_an_already_seen_second_is_still_checked(later: str) -> None:
    normalize_event(sample(SOURCE))  # 2026-11-29T15:08:52 is now a known canonical second
    raw = sample(SOURCE)
    raw["time"] = later
    expected, got, refused = _time_by_model_and_by_normalizer(raw)
    assert refused in (None, "time")
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(times(), st.integers(0, 29), st.characters())
def test_times_after_a_canonical_one_agree_with_the_model(when: str, at: int, char: str) -> None:
    first = sample(SOURCE)
    first["time"] = when
    try:
        canonical = normalize_event(first)["time"]  # remembers its second
    except EventError:
        return
    raw = sample(SOURCE)
    raw["time"] = canonical[:at] + char + canonical[at + 1 :]
    expected, got, _ = _time_by_model_and_by_normalizer(raw)
    assert got == expected


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, st.dictionaries(st.text(max_size=3), bad_values, max_size=3)))
def testplain_json_never_accepts_what_check_json_refuses(value: Any) -> None:
    for candidate in (value, {"x": value}, [value]):
        if plain_json(candidate, 0):
            check_json(candidate)  # must not raise


def testplain_json_respects_the_depth_limit() -> None:
    deep: Any = 1
    for _ in range(16):
        deep = {"a": deep}
    assert plain_json(deep, 0)  # 16 levels, counting itself
    assert not plain_json({"a": deep}, 0)
    with pytest.raises(ValueProblem):
        check_json({"a": deep})
