"""Patterns a rule may use run in bounded time on any text the field can hold."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.alerts.patterns import (
    MAX_SUBJECT,
    compile_glob,
    compile_regex,
    glob_problem,
    regex_problem,
)
from auditlock.alerts.rules import compile_condition

# Pieces whose concatenations exercise repeats, groups and alternation.
_PIECES = ["a", "b", ".", "[ab]", "(a|b)", "a*", ".*", "b+", "(ab)+", "(a*)*", "a?", "x{2,4}"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=6), st.text("ab", max_size=400))
def test_every_accepted_regex_searches_the_capped_text_quickly(
    pieces: list[str], text: str
) -> None:
    pattern = "".join(pieces)
    try:
        re.compile(pattern)
    except re.error:
        return
    if regex_problem(pattern) is not None:
        return
    condition = compile_condition({"field": "actor.name", "regex": pattern})
    worst = ("a" * MAX_SUBJECT) + "!"
    started = time.perf_counter()
    condition.holds({"actor": {"name": worst}})
    condition.holds({"actor": {"name": text}})
    assert time.perf_counter() - started < 0.5, pattern


def test_a_refused_regex_cannot_be_compiled_by_hand_either() -> None:
    for pattern in ("(a+)+", ".*a.*b", "(?=x)"):
        assert regex_problem(pattern)
        try:
            compile_regex(pattern)
        except ValueError as exc:
            assert pattern in str(exc)
        else:
            raise AssertionError(pattern)


def test_possessive_repeats_are_free() -> None:
    assert regex_problem(".*+a.*b") is None
    assert regex_problem("^system:serviceaccount:[^:]++:.*$") is None


def test_globs_match_the_whole_text_and_are_bounded() -> None:
    assert compile_glob("system:serviceaccount:*").match("system:serviceaccount:ns:sa")
    assert not compile_glob("secrets").match("secrets/x")
    assert glob_problem("*a*b*c*d*e*") is not None
    assert glob_problem("*a*") is None
