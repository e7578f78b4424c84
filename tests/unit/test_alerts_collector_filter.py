"""The collector decides from an event's canonical bytes whether any rule could match,
without decoding it; it never rules out an event a rule matches."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.canonical import canonical_bytes
from auditlock.sidecar.alerting import _member_text


def _event(action: str, category: str = "data", **extra: object) -> bytes:
    return canonical_bytes(
        {
            "action": action,
            "actor": {"kind": "user", "name": '"category":"access"'},
            "category": category,
            "details": {"action": "decoy", "category": "decoy"},
            **extra,
        }
    )


def test_the_first_member_is_the_top_level_one() -> None:
    data = _event("export")
    assert data.startswith(b'{"action":"export"')
    assert _member_text(data, b'"action":"') == b"export"
    assert _member_text(data, b'"category":"') == b"data"


def test_escaped_text_is_left_to_the_decoder() -> None:
    assert _member_text(_event('ex"port'), b'"action":"') is None
    assert _member_text(b'{"id":"x"}', b'"action":"') is None


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_never_a_wrong_answer(action: str, name: str) -> None:
    data = canonical_bytes({"action": action, "actor": {"kind": "user", "name": name},
                            "category": "access"})  # fmt: skip
    for member, value in ((b'"action":"', action), (b'"category":"', "access")):
        found = _member_text(data, member)
        assert found is None or found == value.encode("utf-8", "surrogatepass")
