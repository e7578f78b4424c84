"""Decoding an HTTP intake body (one JSON object, an array, or NDJSON) within a memory
budget.

A JSON parser builds Python objects up to ~50 times larger than their text (`{},` is
three bytes and a 64-byte dict plus its slot), so 8 MiB of `[{},{},...]` would take
about 250 MiB. Before a document is decoded as a whole, `decoded_cost` bounds from
above what decoding it can allocate, by counting its structural characters (a C-speed
byte count); a document over DECODE_BUDGET_BYTES is not decoded at once:

* NDJSON is decoded line by line, lazily, as the pipeline consumes the events; a line
  over the budget becomes `Oversized` (rejected `too_large`);
* a single array or object over the budget is refused (`TooDense`, answered 413) with a
  message saying to send fewer events per request or NDJSON.

Integers: orjson turns an integer literal beyond 64 bits into a float, which would
reach the trail as a decimal string while 2**53 + 1 is refused. A text with a run of
20 or more digits is therefore decoded with the standard library's parser, which keeps
integers exact, so the event check refuses them like any integer beyond +-(2**53 - 1).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import orjson

from auditlock.sidecar.pipeline.normalize import Oversized

DECODE_BUDGET_BYTES = 32 * 1024 * 1024
_LONG_DIGITS = re.compile(rb"\d{20}")
_FIRST = re.compile(rb"\s*(\S)")
_INNER_NEWLINE = re.compile(rb"\S\s*\n\s*\S")


class BadBody(Exception):
    pass


class TooDense(Exception):
    """A body whose decoded form could exceed the memory budget."""


def decoded_cost(text: bytes) -> int:
    """An upper bound, in bytes, of what decoding `text` can allocate (measured per
    shape: a container ~100 bytes, a string ~110 + its text, an object member ~100, a
    number ~40)."""
    count = text.count
    colons = count(b":")
    return (
        len(text)
        + 100 * (count(b"{") + count(b"["))
        + 110 * (count(b'"') // 2)
        + 40 * (count(b",") + colons + 1)
        + 100 * colons
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is infinite as a double")
    return value


def loads(text: bytes) -> Any:
    """One JSON document; integers of any size stay exact (see the module doc)."""
    if _LONG_DIGITS.search(text) is None:
        return orjson.loads(text)
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_body(body: bytes) -> Iterator[Any]:
    """Object, array or NDJSON -> the items (not yet validated as events), lazily."""
    if not body or body.isspace():
        raise BadBody("empty body: send a JSON object, a JSON array or NDJSON")
    if decoded_cost(body) <= DECODE_BUDGET_BYTES:
        try:
            value = loads(body)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            if not _INNER_NEWLINE.search(body):
                raise BadBody(f"body is not JSON: {exc}") from None
            return _ndjson(body)
        return iter(value) if isinstance(value, list) else iter([value])
    first = _FIRST.match(body)
    if first is not None and first.group(1) == b"{" and _INNER_NEWLINE.search(body):
        return _ndjson(body)
    raise TooDense(
        f"body would take more than {DECODE_BUDGET_BYTES // (1024 * 1024)} MiB to decode "
        "at once: send fewer events per request, or NDJSON (decoded line by line)"
    )


def _ndjson(body: bytes) -> Iterator[Any]:
    # Line by line, never all lines at once: millions of tiny lines would cost more as
    # bytes objects than the body itself.
    start = 0
    number = 0
    end_of_body = len(body)
    while start < end_of_body:
        end = body.find(b"\n", start)
        if end < 0:
            end = end_of_body
        line = body[start:end]
        start = end + 1
        number += 1
        if not line or line.isspace():
            continue
        if decoded_cost(line) > DECODE_BUDGET_BYTES:
            yield Oversized(len(line))
            continue
        try:
            yield loads(line)
        except ValueError as exc:
            raise BadBody(f"NDJSON line {number} is not JSON: {exc}") from None
