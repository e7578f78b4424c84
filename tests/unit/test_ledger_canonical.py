"""RFC 8785 canonical bytes, checked against the `rfc8785` package as an oracle."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings

from auditlock.ledger.canonical import canonical_bytes, canonical_lines
from auditlock.ledger.normalize import normalize_event

from .ledger_strategies import events, json_values


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_bytes_equal_rfc8785_for_every_accepted_value(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)
    # The batch encoder (msgspec) too, alone and among others.
    assert canonical_lines([value, [value], {"v": value}]) == [
        rfc8785.dumps(value),
        rfc8785.dumps([value]),
        rfc8785.dumps({"v": value}),
    ]


@settings(max_examples=300, deadline=None)
@given(events())
def test_canonical_bytes_equal_rfc8785_for_every_accepted_event(raw: dict[str, Any]) -> None:
    event = normalize_event(raw)
    assert canonical_bytes(event) == rfc8785.dumps(event)
    assert canonical_lines([event, event]) == [rfc8785.dumps(event)] * 2


def test_member_order_is_utf16_order_within_the_bmp() -> None:
    value = {"\ue000": 1, "b": 2, "a": 3, "\u00e9": 4, "B": 5}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes(value).decode() == '{"B":5,"a":3,"b":2,"é":4,"\ue000":1}'
    assert canonical_lines([value]) == [canonical_bytes(value)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\u2028\x7f", '"\u2028\x7f"'),
        ("\x00\x1f\b\t\n\f\r", '"\\u0000\\u001f\\b\\t\\n\\f\\r"'),
        ('"\\/', '"\\"\\\\/"'),
        (2**53 - 1, "9007199254740991"),
        (-(2**53 - 1), "-9007199254740991"),
    ],
)
def test_escaping_and_integers_follow_rfc8785(value: Any, expected: str) -> None:
    assert canonical_bytes(value) == expected.encode()
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_lines([value]) == [expected.encode()]
