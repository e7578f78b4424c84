"""Every line of a ledger must be exactly the canonical envelope of a valid event
(docs/FORMAT.md sections 3-5 and 11.3.3), even when the trusted key signed it.

Each bad line below is written by a real StreamWriter (append_canonical), so chain,
Merkle root and signatures are all correct: only the line rules can catch it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.errors import EventError
from auditlock.ledger.event import validate_event
from auditlock.ledger.line_rules import LineRules
from auditlock.ledger.lines import ZERO_HASH, LineFormat, line_prefix
from auditlock.ledger.normalize import normalize_event
from auditlock.ledger.synth import SimulatedClock, synthetic_events

from .ledger_helpers import Ledger, new_ledger
from .ledger_strategies import bad_values, events


def _good() -> dict[str, Any]:
    _, event = next(synthetic_events("app", 1))
    return event


def _bytes(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def _write(ledger: Ledger, bad: list[bytes]) -> None:
    """Stream "app": a valid event, the bad event bytes, a valid event; sealed and closed."""
    clock = SimulatedClock(1_767_225_600_000_000_000)
    writer = ledger.writer("app", clock=clock)
    items = [event for _, event in synthetic_events("app", 2 + len(bad))]
    writer.append(items[0])
    for raw in bad:
        writer.append_canonical(raw)
    writer.append(items[-1])
    writer.store(writer.seal())
    writer.store(writer.close())


def _with(path: str, value: Any) -> dict[str, Any]:
    event = json.loads(json.dumps(_good()))
    *parents, last = path.split(".")
    part = event
    for key in parents:
        part = part.setdefault(key, {})
    part[last] = value
    return event


def _without(path: str) -> dict[str, Any]:
    event = _good()
    del event[path]
    return event


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


_SHORT_TIME = "2026-01-01T00:00:00Z"  # valid RFC 3339, not the stored form
_FEB_30 = "2026-02-30T00:00:00.000000000Z"  # the stored shape, not a date

_CASES: list[tuple[str, bytes, str, str]] = [
    ("float", _bytes(_with("details.price", 1.5)), "event-invalid", "details.price"),
    ("integer beyond 2^53-1", _bytes(_with("details.n", 2**53)), "event-invalid", "details.n"),
    ("nested 17 levels", _bytes(_with("details.a", _nested(16))), "event-invalid", "details"),
    (
        "nested 100,000 levels",
        _bytes(_with("details.a", "DEEP")).replace(b'"DEEP"', b"[" * 100_000 + b"]" * 100_000),
        "event-invalid",
        "deeper than 16",
    ),
    ("astral member name", _bytes(_with("details.\U0001f600", 1)), "event-invalid", "U+FFFF"),
    (
        "lone surrogate",
        _bytes(_with("action", "PLACEHOLDER")).replace(b"PLACEHOLDER", b"\\ud800"),
        "event-invalid",
        "action",
    ),
    ("null optional member", _bytes(_with("actor.ip", None)), "event-invalid", "actor.ip"),
    ("missing source", _bytes(_without("source")), "event-invalid", "source"),
    ("time not stored form", _bytes(_with("time", _SHORT_TIME)), "event-invalid", "time"),
    ("impossible date", _bytes(_with("time", _FEB_30)), "event-invalid", "time"),
    ("non-canonical IPv6", _bytes(_with("actor.ip", "2001:DB8::1")), "event-invalid", "actor.ip"),
    ("IPv4-mapped as hex", _bytes(_with("actor.ip", "::ffff:102:304")), "event-invalid", "ip"),
    ("bad category", _bytes(_with("category", "other")), "event-invalid", "category"),
    ("1025 characters", _bytes(_with("action", "\U0001f600" * 1025)), "event-invalid", "1024"),
    ("unknown member", _bytes(_with("extra", "x")), "event-invalid", "extra"),
    (
        "unsorted members",
        json.dumps(_good(), separators=(",", ":"), ensure_ascii=False).encode(),
        "line-not-canonical",
        "RFC 8785",
    ),
    (
        "\\u00e9 escape",
        _bytes(_with("action", "caf\u00e9")).replace("\u00e9".encode(), b"\\u00e9"),
        "line-not-canonical",
        "RFC 8785",
    ),
    ("whitespace", _bytes(_good()).replace(b'":', b'": '), "line-not-canonical", "RFC 8785"),
    (
        "extra envelope member",
        _bytes(_good()) + b',"signed_by":"admin"',
        "line-not-canonical",
        "extra member 'signed_by'",
    ),
    ("non-object event", b"5", "event-invalid", "JSON object"),
    (
        "duplicate member",
        _bytes(_good()).replace(b'"outcome":"success"', b'"outcome":"failure","outcome":"success"'),
        "line-not-canonical",
        "appears twice",
    ),
]


@pytest.mark.parametrize(
    ("raw", "code", "fragment"), [c[1:] for c in _CASES], ids=[c[0] for c in _CASES]
)
def test_signed_line_breaking_a_rule_fails_verify(
    tmp_path: Path, raw: bytes, code: str, fragment: str
) -> None:
    ledger = new_ledger(tmp_path)
    _write(ledger, [raw])
    exit_code, out = ledger.verify("--json")
    report = json.loads(out)
    assert exit_code == 1, out
    assert [(f["code"], f["first_seq"]) for f in report["findings"]] == [(code, 1)], out
    assert fragment in report["findings"][0]["message"]
    assert report["findings"][0]["object"].startswith("streams/app/000000/seg-")


def test_the_same_ledger_with_valid_lines_passes(tmp_path: Path) -> None:
    """The cases above differ from this one only in the middle lines: valid events at
    the edges of the rules (16 levels, astral values, BMP names, null inside details)."""
    ledger = new_ledger(tmp_path)
    edges = [
        _with("details.price", "1.5"),
        _with("details.a", _nested(15)),  # details + 15 arrays = 16 levels
        _with("details.\uffff\u00e9", [None, "\U0001f600", -(2**53 - 1), {"": True}]),
        _with("actor.ip", "::ffff:1.2.3.4"),
        _with("action", "\U0001f600" * 1024),
    ]
    _write(ledger, [canonical_bytes(normalize_event(e)) for e in edges])
    exit_code, out = ledger.verify()
    assert exit_code == 0, out


def test_repeated_id_is_a_warning_naming_both_places(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    first = _good()
    _write(ledger, [_bytes(first)])  # seq 1 repeats the id of seq 0
    exit_code, out = ledger.verify("--json")
    report = json.loads(out)
    assert exit_code == 0, out
    assert [(w["code"], w["first_seq"]) for w in report["warnings"]] == [("duplicate-id", 1)]
    assert first["id"] in report["warnings"][0]["message"]


def _line(event: bytes, seq: int = 0) -> bytes:
    return LineFormat(b"s", 0).chain([event], seq, ZERO_HASH)[0][0]


def _verdict(lines: list[bytes]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    LineRules().check(
        "s",
        lines,
        0,
        len(line_prefix(0)),
        lambda seq, code, _msg: found.append((seq, code)),
        lambda seq, code, _msg: None,
    )
    return found


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=5))
def test_every_accepted_event_passes_the_line_rules(raws: list[dict[str, Any]]) -> None:
    """No false alarm: whatever intake accepts, stored by the writer, passes."""
    lines = [_line(canonical_bytes(normalize_event(raw)), i) for i, raw in enumerate(raws)]
    assert _verdict(lines) == []


def _reference(event: bytes) -> bool:
    """FORMAT.md's rule written plainly: parse (no duplicate names), validate with the
    pydantic model, and the stored form's canonical bytes are exactly these bytes."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise ValueError("duplicate")
        return dict(items)

    try:
        raw = json.loads(event, object_pairs_hook=pairs)
        stored = validate_event(raw)
    except (ValueError, EventError):
        return False
    return stored == raw and canonical_bytes(stored) == event


_PATHS = st.sampled_from(
    ["id", "time", "category", "action", "actor.ip", "actor.name", "target.name",
     "source.pod", "correlation.trace_id", "details.x", "details.y.z", "extra"]
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(events(), _PATHS, bad_values, st.sampled_from(["sorted", "ascii", "unsorted"]))
def test_line_rules_agree_with_the_plain_reading_of_the_format(
    raw: dict[str, Any], path: str, value: Any, encoding: str
) -> None:
    """Fast path and diagnosis give the verdict FORMAT.md gives, on near-valid events."""
    event = json.loads(json.dumps(raw))
    *parents, last = path.split(".")
    part = event
    for key in parents:
        part = part.setdefault(key, {}) if isinstance(part.get(key, {}), dict) else {}
    part[last] = value
    try:
        if encoding == "sorted":
            data = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        elif encoding == "ascii":
            data = json.dumps(event, sort_keys=True, separators=(",", ":"))
        else:
            data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        encoded = data.encode("utf-8", "surrogatepass")
    except ValueError:  # NaN etc.: json.dumps writes them, the reference refuses them
        return
    assert (_verdict([_line(encoded)]) == []) == _reference(encoded)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10.0.0.7", "10.0.0.7"),
        ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  # first of two equal zero runs
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  # one zero group stays
        ("2001:0db8::0001", "2001:db8::1"),
        ("::FFFF:102:304", "::ffff:1.2.3.4"),  # RFC 5952 section 5, on every Python
        ("0:0:0:0:0:ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ("::1.2.3.4", "::102:304"),  # IPv4-compatible (deprecated): plain hex
        ("::", "::"),
    ],
)
def test_ip_is_stored_in_rfc_5952_form(given: str, stored: str) -> None:
    event = normalize_event(_with("actor.ip", given))
    assert event["actor"]["ip"] == stored
    assert validate_event(_with("actor.ip", given))["actor"]["ip"] == stored


@pytest.mark.parametrize("given", ["fe80::1%eth0", "010.0.0.1", "1.2.3", "::ffff:1.2.3.256"])
def test_ip_forms_the_format_refuses(given: str) -> None:
    with pytest.raises(EventError, match=r"actor\.ip"):
        normalize_event(_with("actor.ip", given))
