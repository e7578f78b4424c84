"""Canonical bytes: RFC 8785 (JSON Canonicalization Scheme) for the accepted event space.

RFC 8785 serializes with no whitespace, object members sorted by the UTF-16 code units of
their names, strings escaped minimally (only `"`, `\\` and U+0000..U+001F, the latter as
\\b \\t \\n \\f \\r or lowercase \\u00xx), UTF-8 output, and numbers in ECMAScript form.

Two rules of the event model (docs/FORMAT.md, "Numbers and names") make a fast encoder
exact for every accepted event:

* numbers are integers with |n| <= 2**53 - 1, so ECMAScript form is the plain decimal
  integer (no floats, no exponents, no -0);
* object member names contain only Basic Multilingual Plane characters, so ordering by
  code point (what orjson does, via UTF-8 bytes) equals ordering by UTF-16 code units.

orjson's string escaping is the RFC 8785 escaping, and so is msgspec's (`canonical_lines`,
which writes a msgspec struct's fields in declaration order: structs given to it declare
them sorted). Hypothesis tests
(tests/unit/test_ledger_canonical.py) check both encoders against the `rfc8785` package
over the whole accepted event space.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

MAX_SAFE_INTEGER = 2**53 - 1

_OPTIONS = orjson.OPT_SORT_KEYS
# Dict members sorted; a struct's fields in the order it declares them, which the
# structs events are made of keep sorted (sidecar/pipeline/typed_records.py).
_LINES = msgspec.json.Encoder(order="deterministic")


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value already inside the accepted event space.

    Does not validate (the hot path calls it once per event); validate first with
    `normalize_event` or `AuditEvent`.
    """
    return orjson.dumps(value, option=_OPTIONS)


def canonical_lines(values: list[Any]) -> list[bytes]:
    """`canonical_bytes` of each value (dicts, or msgspec structs whose fields are
    declared in sorted order), in one encoder call.

    A JSON value never holds a raw newline (strings escape it), so the values' lines are
    split apart at newlines; each line is a bytes object of exactly its length.
    """
    return canonical_batch(values)[0]


def canonical_batch(values: list[Any]) -> tuple[list[bytes], int]:
    """`canonical_lines` of `values`, and how many bytes they hold in all (a bound on the
    longest that costs nothing to compute)."""
    data = _LINES.encode_lines(values)
    lines = data.split(b"\n")
    lines.pop()
    return lines, len(data) - len(lines)
