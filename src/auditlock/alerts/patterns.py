"""Bounded regular expressions and globs for alert rules.

A rule's pattern runs on every event the collector or the operator sees, so a pattern
that backtracks catastrophically would stall intake for everyone. Python's `re` is a
backtracking engine; rather than bring a second engine into the collector, a pattern is
parsed at admission and refused when its shape can backtrack without bound:

- back-references and look-around (no linear-time engine supports them either);
- a repeat that contains another unbounded repeat (`(a+)+`), or an alternation (`(a|a)*`);
- more than MAX_UNBOUNDED backtracking unbounded repeat (a search with two, `.*a.*b`, is
  cubic in the text length: 1.4 s on 1 KiB), or a counted repeat above MAX_COUNT;
  possessive repeats (`.*+`) never backtrack and are not counted;
- a pattern longer than MAX_REGEX_LENGTH.

What is left is searched in at most MAX_SUBJECT characters of the field's text (the
start of it), which bounds the time of one search whatever the event holds.
docs/alerts.md, "Patterns", lists the same rules.
"""

from __future__ import annotations

import fnmatch
import re
from re import _constants as _c  # type: ignore[attr-defined]  # what `re` itself parses with
from re import _parser as _p  # type: ignore[attr-defined]
from typing import Any

MAX_REGEX_LENGTH = 256
MAX_UNBOUNDED = 1
MAX_COUNT = 100
MAX_SUBJECT = 256
MAX_GLOB_STARS = 4

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_POSSESSIVE = getattr(_c, "POSSESSIVE_REPEAT", None)
_REFUSED = {
    _c.GROUPREF: "back-references are not allowed",
    _c.GROUPREF_EXISTS: "conditional groups are not allowed",
    _c.ASSERT: "look-ahead and look-behind are not allowed",
    _c.ASSERT_NOT: "look-ahead and look-behind are not allowed",
}


class _Shape:
    def __init__(self) -> None:
        self.unbounded = 0


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` may not be a rule's regex, or None when it may."""
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"regex longer than {MAX_REGEX_LENGTH} characters"
    try:
        parsed = _p.parse(pattern)
    except re.error as exc:
        return f"regex {pattern!r} does not compile: {exc}"
    shape = _Shape()
    problem = _walk(list(parsed), shape, inside_repeat=False)
    if problem:
        return f"regex {pattern!r}: {problem}"
    if shape.unbounded > MAX_UNBOUNDED:
        return (
            f"regex {pattern!r}: more than {MAX_UNBOUNDED} backtracking unbounded repeat "
            "(* + {n,}); make the others possessive (*+ ++) or split the rule into "
            "several conditions"
        )
    return None


def _walk(items: list[tuple[Any, Any]], shape: _Shape, *, inside_repeat: bool) -> str | None:
    for op, arg in items:
        if op in _REFUSED:
            return _REFUSED[op]
        if op in _REPEATS or (_POSSESSIVE is not None and op == _POSSESSIVE):
            _low, high, body = arg
            unbounded = high == _c.MAXREPEAT
            if not unbounded and high > MAX_COUNT:
                return f"a counted repeat above {MAX_COUNT}"
            possessive = _POSSESSIVE is not None and op == _POSSESSIVE
            if unbounded and not possessive:
                shape.unbounded += 1
                if inside_repeat:
                    return "a repeat inside a repeat can backtrack catastrophically"
            body_items = list(body)
            if unbounded and _has_branch(body_items):
                return "an alternation inside a repeat can backtrack catastrophically"
            problem = _walk(body_items, shape, inside_repeat=inside_repeat or unbounded)
            if problem:
                return problem
        elif op == _c.SUBPATTERN:
            problem = _walk(list(arg[-1]), shape, inside_repeat=inside_repeat)
            if problem:
                return problem
        elif op == _c.BRANCH:
            for branch in arg[1]:
                problem = _walk(list(branch), shape, inside_repeat=inside_repeat)
                if problem:
                    return problem
        elif op == getattr(_c, "ATOMIC_GROUP", object()):
            problem = _walk(list(arg), shape, inside_repeat=inside_repeat)
            if problem:
                return problem
    return None


def _has_branch(items: list[tuple[Any, Any]]) -> bool:
    for op, arg in items:
        if op == _c.BRANCH:
            return True
        if op == _c.SUBPATTERN and _has_branch(list(arg[-1])):
            return True
    return False


def compile_regex(pattern: str) -> re.Pattern[str]:
    """The compiled pattern; raises ValueError when admission would refuse it."""
    problem = regex_problem(pattern)
    if problem:
        raise ValueError(problem)
    return re.compile(pattern)


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` may not be a rule's glob, or None when it may."""
    if pattern.count("*") > MAX_GLOB_STARS:
        return f"glob {pattern!r}: more than {MAX_GLOB_STARS} '*'"
    return None


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A shell-style glob as an anchored regex (fnmatch's translation)."""
    problem = glob_problem(pattern)
    if problem:
        raise ValueError(problem)
    return re.compile(fnmatch.translate(pattern), re.DOTALL)
