"""Records as senders write them, for the pipeline's hypothesis tests: the common shape
most of the time, with any member sometimes missing, of another type, or breaking a
rule."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from auditlock.sidecar.config import SourceIdentity

from .ledger_strategies import bad_values, ips, json_values, short, times

NS = 1_764_428_645_123_456_789
SEEN_SECOND = "2025-11-29T15:04:05."  # NS's second: known after the first event
IDENTITY = SourceIdentity(cluster="c1", namespace="shop", pod="api-1", container="c")
ascii_short = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)
strings = st.one_of(ascii_short, short, bad_values)
member_names = st.one_of(
    st.sampled_from(["n", "user_agent", "intake", "observed_by", "stage", "k"]), ascii_short
)


ascii_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53) - 2, 2**53 + 2), ascii_short),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(ascii_short, inner, max_size=3)
    ),
    max_leaves=8,
)


def pick(draw: Any, good: Any, bad: Any = strings) -> Any:
    """Mostly a value of the common shape, sometimes one of any other kind."""
    return draw(good) if draw(st.integers(0, 9)) else draw(bad)


@st.composite
def records(draw: Any) -> dict[str, Any]:
    """Records as senders write them: the common shape most of the time, with any member
    sometimes missing, of another type, or breaking a rule."""
    record: dict[str, Any] = {}
    if draw(st.booleans()):
        record["category"] = pick(draw, st.sampled_from(["access", "data"]))
    if draw(st.integers(0, 9)):
        record["action"] = pick(draw, ascii_short)
    if draw(st.booleans()):
        record["outcome"] = pick(draw, st.sampled_from(["success", "failure"]))
    actor: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        actor["name"] = pick(draw, ascii_short)
    if draw(st.booleans()):
        actor["kind"] = pick(draw, st.sampled_from(["user", "system"]))
    if draw(st.booleans()):
        actor["ip"] = pick(draw, st.one_of(ips, st.none()))
    if not draw(st.integers(0, 9)):
        actor[draw(ascii_short)] = draw(ascii_short)
    record["actor"] = pick(draw, st.one_of(st.just(actor), ascii_short))
    target: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        target["resource"] = pick(draw, ascii_short)
    for key in ("namespace", "name"):
        if draw(st.booleans()):
            target[key] = pick(draw, ascii_short)
    if not draw(st.integers(0, 9)):
        target[draw(ascii_short)] = draw(ascii_short)
    record["target"] = pick(draw, st.one_of(st.just(target), ascii_short))
    for key in ("request_id", "trace_id"):
        if draw(st.booleans()):
            record[key] = pick(draw, ascii_short, st.one_of(strings, st.none()))
    if not draw(st.integers(0, 3)):
        record["correlation"] = pick(
            draw,
            st.fixed_dictionaries({}, optional={"request_id": ascii_short, "trace_id": strings}),
            st.one_of(strings, st.dictionaries(ascii_short, ascii_short, max_size=2)),
        )
    if draw(st.booleans()):
        record["details"] = pick(
            draw,
            st.dictionaries(member_names, ascii_json, max_size=4),
            st.one_of(
                strings,
                st.none(),
                st.dictionaries(member_names, st.one_of(json_values, bad_values), max_size=3),
            ),
        )
    for _ in range(draw(st.integers(0, 2))):
        record[draw(member_names)] = pick(draw, ascii_json, st.one_of(json_values, bad_values))
    if not draw(st.integers(0, 2)):
        record["id"] = pick(
            draw,
            st.one_of(
                st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,20}\Z"),
                st.sampled_from(["k8s-audit-1", "seen-1"]),
            ),
        )
    if not draw(st.integers(0, 2)):
        record["time"] = pick(draw, st.just(SEEN_SECOND + "000000001Z"), times())
    return record
