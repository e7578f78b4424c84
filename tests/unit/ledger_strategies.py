"""Hypothesis strategies for the accepted event space (docs/FORMAT.md, "Events")."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from auditlock.ledger.canonical import MAX_SAFE_INTEGER
from auditlock.ledger.vocabulary import ACTOR_KINDS, CATEGORIES, OUTCOMES

# Any Unicode scalar value (no surrogates), including controls, U+2028, astral planes.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
short = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)
# Member names: the BMP only (see canonical.py), mixing high-BMP and ASCII to test order.
names = st.text(
    st.one_of(
        st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)),
        st.sampled_from("aAzZ_~\ue000\uffff\u00e9"),
    ),
    max_size=8,
)
integers = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
scalars = st.one_of(st.none(), st.booleans(), integers, text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)),
    max_leaves=20,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# details may nest at most MAX_DEPTH (16) levels, counting itself.
details = st.dictionaries(names, json_values, max_size=5).filter(lambda d: _depth(d) <= 16)

digits = st.integers(min_value=0, max_value=9)


@st.composite
def times(draw: Any) -> str:
    year = draw(st.integers(min_value=1970, max_value=2200))
    month = draw(st.integers(min_value=1, max_value=12))
    day = draw(st.integers(min_value=1, max_value=28))
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    fraction = "".join(str(draw(digits)) for _ in range(draw(st.integers(0, 9))))
    zone = draw(st.sampled_from(["Z", "z", "+00:00", "+05:30", "-08:00"]))
    base = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return base + (f".{fraction}" if fraction else "") + zone


ips = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


def _optional(strategy: Any) -> Any:
    return st.one_of(st.just(None), strategy)


@st.composite
def events(draw: Any) -> dict[str, Any]:
    """Raw events the model accepts (optional members sometimes absent, sometimes None)."""
    event: dict[str, Any] = {
        "id": draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,20}\Z")),
        "time": draw(times()),
        "category": draw(st.sampled_from(CATEGORIES)),
        "action": draw(short),
        "outcome": draw(st.sampled_from(OUTCOMES)),
        "actor": {"kind": draw(st.sampled_from(ACTOR_KINDS)), "name": draw(short)},
        "target": {"resource": draw(short)},
        "source": {},
    }
    if draw(st.booleans()):
        event["actor"]["ip"] = draw(_optional(ips))
    for key in ("namespace", "name"):
        if draw(st.booleans()):
            event["target"][key] = draw(_optional(short))
    for key in ("cluster", "namespace", "pod", "container", "node"):
        if draw(st.booleans()):
            event["source"][key] = draw(_optional(short))
    if draw(st.booleans()):
        event["correlation"] = draw(
            _optional(st.fixed_dictionaries({}, optional={"request_id": short, "trace_id": short}))
        )
    if draw(st.booleans()):
        event["details"] = draw(_optional(details))
    return event


# Values that break one rule, for the "both paths reject the same events" property.
bad_values = st.one_of(
    st.floats(allow_nan=True),
    st.integers(min_value=MAX_SAFE_INTEGER + 1),
    st.integers(max_value=-MAX_SAFE_INTEGER - 1),
    st.just("\ud800"),
    st.just(""),
    st.just("x" * 1025),
    st.just(1),
    st.just(True),
    st.just([]),
    st.just({}),
    st.just({"\U0001f600": 1}),
    st.just("not-an-ip"),
    st.just("2026-02-30T00:00:00Z"),
    st.just("2026-01-01T00:00:60Z"),
    st.just("robot"),
)
