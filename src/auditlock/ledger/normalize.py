"""The fast path of intake validation: `normalize_event(dict) -> dict` without pydantic.

Same rules as `AuditEvent` (event.py), written out by hand because the sidecar handles tens
of thousands of events per second. tests/unit/test_ledger_event.py checks with hypothesis
that this function and the model accept the same events and return the same dicts.

Every fast path below only *accepts*: it recognises the common shape (plain ASCII strings,
small integers) and otherwise hands the value to the general check, which applies the full
rules and names the first problem. So errors come from one place and stay identical.

A caller that stamps the same `source` on every event (the sidecar: its own identity)
validates it once with `check_source` and passes the result as `checked_source`; an event
whose `source` *is* that object (identity, not equality) skips re-checking it. Any other
`source`, even an equal one, is checked as usual.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from auditlock.ledger.canonical import MAX_SAFE_INTEGER
from auditlock.ledger.errors import BAD_VALUE, MISSING_FIELD, EventError
from auditlock.ledger.timestamps import normalize_time
from auditlock.ledger.values import (
    MAX_DEPTH,
    MAX_SHORT,
    ValueProblem,
    check_json,
    check_short,
    normalize_ip,
    problem_code,
)
from auditlock.ledger.vocabulary import (
    ACTOR_KINDS,
    ACTOR_MEMBERS,
    CATEGORIES,
    CORRELATION_MEMBERS,
    EVENT_MEMBERS,
    ID_PATTERN,
    OUTCOMES,
    SOURCE_MEMBERS,
    TARGET_MEMBERS,
)

_ID = re.compile(ID_PATTERN.rstrip("$") + r"\Z")
_CATEGORIES = frozenset(CATEGORIES)
_OUTCOMES = frozenset(OUTCOMES)
_ACTOR_KINDS = frozenset(ACTOR_KINDS)
_TOP = frozenset(EVENT_MEMBERS)
_ACTOR = ACTOR_MEMBERS
_TARGET = TARGET_MEMBERS
_SOURCE = SOURCE_MEMBERS
_CORRELATION = CORRELATION_MEMBERS
_MEMBERS: dict[tuple[str, ...], frozenset[str]] = {
    m: frozenset(m) for m in (_ACTOR, _TARGET, _SOURCE, _CORRELATION)
}
# "YYYY-MM-DDTHH:MM:SS." of the last time that arrived in canonical form: events come in
# time order, so most share it and need only their fraction digits checked.
_canonical_second = [""]
_ACTOR_SET = _MEMBERS[_ACTOR]
_TARGET_SET = _MEMBERS[_TARGET]
_CORRELATION_SET = _MEMBERS[_CORRELATION]
# For a caller's own accept-only fast path (the sidecar's normalizer): the same sets and
# caches as the checks below, so the two cannot drift apart.
ID_RE = _ID
ACTOR_KIND_SET = _ACTOR_KINDS
TARGET_MEMBER_SET = _TARGET_SET
CORRELATION_MEMBER_SET = _CORRELATION_SET
canonical_time_second = _canonical_second


def check_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """The normalized `source` object, validated once; raise EventError(path, reason).

    Pass the result to `normalize_event(..., checked_source=...)` on every event that
    carries exactly this object. Do not mutate it afterwards: events share it.
    """
    value = _part({"source": source}, "source", _SOURCE, required=True)
    assert value is not None
    return _strings(value, "source", _SOURCE)


def normalize_event(
    raw: Mapping[str, Any], checked_source: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate `raw` and return the normalized event dict; raise EventError(path, reason).

    `checked_source`: a result of `check_source`; used as is when `raw["source"]` is that
    very object (see the module docstring).
    """
    if type(raw) is not dict:
        raise EventError([("", "an event must be a JSON object")])
    if not raw.keys() <= _TOP:
        extra = raw.keys() - _TOP
        raise EventError([(sorted(map(str, extra))[0], "unknown member")])
    get = raw.get
    return normalize_members(
        get("id"),
        get("time"),
        get("category"),
        get("action"),
        get("outcome"),
        get("actor"),
        get("target"),
        get("source"),
        get("correlation"),
        get("details"),
        checked_source,
    )


def normalize_members(
    event_id: Any,
    when: Any,
    category: Any,
    action: Any,
    outcome: Any,
    actor: Any,
    target: Any,
    source: Any,
    correlation: Any,
    details: Any,
    checked_source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`normalize_event` for an event given member by member (None: absent), for a caller
    that assembles events (the sidecar) and need not build a dict to be taken apart."""
    # Checks run in field order (the first problem is the one reported); the result is
    # built at the end in one go. Slow paths hand a one-member dict to the helpers.
    if type(event_id) is not str or not _ID.match(event_id):
        _fail("id", event_id, f"must be a string matching {ID_PATTERN}")
    if type(when) is not str:
        if when is None:
            raise EventError([("time", "missing (required)")], MISSING_FIELD)
        raise EventError([("time", "must be a string")])
    if not (
        len(when) == 30
        and when[:20] == _canonical_second[0]
        and when[29] == "Z"
        and when.isascii()
        and when[20:29].isdigit()
    ):  # else canonical: a second already seen in canonical form + nine digits + Z
        try:
            normalized = normalize_time(when)
        except ValueError as exc:
            raise EventError([("time", str(exc))]) from None
        if normalized == when:
            _canonical_second[0] = when[:20]
        when = normalized
    if type(category) is not str or category not in _CATEGORIES:
        category = _choice({"category": category}, "category", _CATEGORIES, CATEGORIES)
    if type(action) is not str or not action.isascii() or not 0 < len(action) <= MAX_SHORT:
        action = _short({"action": action}, "action", "action", required=True)
    if type(outcome) is not str or outcome not in _OUTCOMES:
        outcome = _choice({"outcome": outcome}, "outcome", _OUTCOMES, OUTCOMES)

    if type(actor) is not dict or not actor.keys() <= _ACTOR_SET:
        actor = _part({"actor": actor}, "actor", _ACTOR, required=True)
        assert actor is not None
    kind = actor.get("kind")
    if type(kind) is not str or kind not in _ACTOR_KINDS:
        _fail("actor.kind", kind, f"must be one of {', '.join(ACTOR_KINDS)}")
    name = actor.get("name")
    if type(name) is not str or not name.isascii() or not 0 < len(name) <= MAX_SHORT:
        name = _short(actor, "name", "actor.name", required=True)
    ip = actor.get("ip")
    if ip is None:
        actor_out = {"kind": kind, "name": name}
    else:
        if type(ip) is not str:
            _fail("actor.ip", ip, "must be a string")
        try:
            actor_out = {"kind": kind, "name": name, "ip": cached_ip(ip)}
        except ValueError as exc:
            raise EventError([("actor.ip", str(exc))]) from None

    target_out = _plain_strings(target, _TARGET_SET)
    if target_out is None or "resource" not in target_out:
        target = _part({"target": target}, "target", _TARGET, required=True)
        assert target is not None
        target_out = _strings(target, "target", _TARGET, required=("resource",))
    if source is None or source is not checked_source:
        source = _part({"source": source}, "source", _SOURCE, required=True)
        assert source is not None
        source = _strings(source, "source", _SOURCE)
    if correlation is not None:
        correlation_out = _plain_strings(correlation, _CORRELATION_SET)
        if correlation_out is None:
            correlation = _part(
                {"correlation": correlation}, "correlation", _CORRELATION, required=False
            )
            assert correlation is not None
            correlation_out = _strings(correlation, "correlation", _CORRELATION)
    if details is not None:
        if type(details) is not dict:
            _fail("details", details, "must be a JSON object")
        if not plain_json(details, 0):
            try:
                check_json(details)
            except ValueProblem as exc:
                path = f"details.{exc.path}" if exc.path else "details"
                raise EventError([(path, exc.reason)], exc.code) from None
    out = {
        "id": event_id,
        "time": when,
        "category": category,
        "action": action,
        "outcome": outcome,
        "actor": actor_out,
        "target": target_out,
        "source": source,
    }
    if correlation is not None:
        out["correlation"] = correlation_out
    if details is not None:
        out["details"] = details
    return out


def _plain_strings(part: Any, members: frozenset[str]) -> dict[str, Any] | None:
    """A copy of `part` if it is an object of known members whose values are all plain
    ASCII strings of 1..MAX_SHORT characters (always valid); else None (check in full)."""
    if type(part) is not dict or not part.keys() <= members:
        return None
    for value in part.values():
        if type(value) is not str or not value.isascii() or not 0 < len(value) <= MAX_SHORT:
            return None
    return dict(part)


def plain_json(value: Any, depth: int) -> bool:
    """True if `value` is certainly inside the accepted JSON value space: ASCII names and
    strings, safe integers, booleans, null, nesting within MAX_DEPTH. False means "not
    sure": check_json then decides and names the problem. No path strings are built."""
    if depth >= MAX_DEPTH:
        return False
    items: Any
    if type(value) is dict:
        for key in value:
            if type(key) is not str or not key.isascii():
                return False
        items = value.values()
    elif type(value) is list:
        items = value
    else:
        return False
    for item in items:
        kind = type(item)
        if kind is str:
            if not item.isascii():
                return False
        elif kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is dict or kind is list:
            if not plain_json(item, depth + 1):
                return False
        elif kind is not bool and item is not None:
            return False
    return True


@functools.lru_cache(maxsize=4096)
def cached_ip(text: str) -> str:
    # A pod sees few distinct client addresses; parsing one costs several microseconds.
    return normalize_ip(text)


def _fail(path: str, value: Any, reason: str) -> None:
    if value is None:
        raise EventError([(path, "missing (required)")], MISSING_FIELD)
    raise EventError([(path, reason)], BAD_VALUE)


def _choice(
    raw: Mapping[str, Any], key: str, allowed: frozenset[str], names: tuple[str, ...]
) -> str:
    value = raw.get(key)
    if type(value) is not str or value not in allowed:
        _fail(key, value, f"must be one of {', '.join(names)}")
    return value  # type: ignore[return-value]


def _short(part: Mapping[str, Any], key: str, path: str, *, required: bool) -> str | None:
    value = part.get(key)
    if value is None:
        if required:
            _fail(path, None, "")
        return None
    if type(value) is not str:
        _fail(path, value, "must be a string")
    try:
        return check_short(value)
    except ValueError as exc:
        raise EventError([(path, str(exc))], problem_code(exc)) from None


def _part(
    raw: Mapping[str, Any], key: str, members: tuple[str, ...], *, required: bool
) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None:
        if required:
            _fail(key, None, "")
        return None
    if type(value) is not dict:
        _fail(key, value, "must be a JSON object")
    if not value.keys() <= _MEMBERS[members]:
        extra = value.keys() - set(members)
        raise EventError([(f"{key}.{sorted(map(str, extra))[0]}", "unknown member")])
    return value  # type: ignore[no-any-return,unused-ignore]


def _strings(
    part: dict[str, Any], path: str, members: tuple[str, ...], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in members:
        value = part.get(key)
        # Inline happy path (plain ASCII, 1..MAX_SHORT); anything else goes through _short,
        # which applies the full rules and names the problem.
        if type(value) is str and value.isascii() and 0 < len(value) <= MAX_SHORT:
            out[key] = value
            continue
        checked = _short(part, key, f"{path}.{key}", required=key in required)
        if checked is not None:
            out[key] = checked
    return out
