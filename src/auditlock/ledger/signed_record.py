"""The two lines every signed record of the trail shares (rotations, certificates,
witness records; FORMAT.md): a JSON body naming its `format`, then the base64 signature
over the body.

Bounded for hostile input: the size is capped (limits.py) and orjson's depth limit
holds (it never recurses in Python). What the members mean, and that the body is in
canonical form, each record's own decoder checks.
"""

from __future__ import annotations

from typing import Any

import orjson

from auditlock.ledger.checkpoint import decode_signature
from auditlock.ledger.errors import FormatError


def open_signed_record(
    data: bytes,
    what: str,
    *,
    max_bytes: int,
    format: str,
    fields: frozenset[str],
    short: str | None = None,
) -> tuple[dict[str, Any], bytes, bytes]:
    """The record's JSON body (an object of `format` with exactly `fields`), the body's
    bytes and the signature; FormatError naming the first problem, `what` the record
    (`short`, when given, names it in the signature and members messages)."""
    short = short or what
    if len(data) > max_bytes:
        raise FormatError(f"{what} is {len(data)} bytes, more than {max_bytes}")
    parts = data.split(b"\n")
    if len(parts) != 3 or parts[2] != b"":
        raise FormatError(f"a {what} is two newline-terminated lines")
    body = parts[0]
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FormatError(f"{what} is not JSON ({exc})") from None
    signature = decode_signature(parts[1], short)
    if not isinstance(raw, dict) or raw.get("format") != format:
        raise FormatError(f"unknown {what} format (expected {format})")
    if set(raw) != fields:
        raise FormatError(f"{short} members differ from {format}: {sorted(set(raw) ^ fields)}")
    return raw, body, signature
