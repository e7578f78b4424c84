"""Segment objects (docs/FORMAT.md, "Segments"): consecutive lines of one epoch.

A segment is the lines seq `first`..`last`, each followed by one LF, nothing else; with
the `.gz` name suffix the same bytes are gzip-compressed (RFC 1952), as exactly one gzip
member.
"""

from __future__ import annotations

import gzip
import zlib

from auditlock.ledger.errors import FormatError
from auditlock.ledger.limits import MAX_SEGMENT_BYTES

_GZIP = 16 + zlib.MAX_WBITS  # zlib's "gzip container" mode


def encode_segment(lines: list[bytes], *, compressed: bool) -> bytes:
    data = b"\n".join([*lines, b""])  # one copy of the lines, each followed by its LF
    # mtime=0 keeps the gzip header deterministic, so a re-sealed segment is byte-identical.
    return gzip.compress(data, compresslevel=6, mtime=0) if compressed else data


def decode_segment(
    data: bytes, *, compressed: bool, max_bytes: int = MAX_SEGMENT_BYTES
) -> list[bytes]:
    """The lines of a segment; FormatError if it is corrupt, truncated, or holds more
    than `max_bytes` (checked while decompressing: a gzip bomb stops at the cap)."""
    if compressed:
        data = gunzip_one_member(data, max_bytes)
    elif len(data) > max_bytes:
        raise FormatError(f"segment is larger than {max_bytes} bytes")
    if not data.endswith(b"\n"):
        raise FormatError("segment does not end with a newline (truncated)")
    lines = data.split(b"\n")
    lines.pop()  # the empty string after the final newline
    return lines


def gunzip_one_member(data: bytes, max_bytes: int) -> bytes:
    """The content of exactly one gzip member filling `data`, what writers produce, never
    inflating more than `max_bytes`. A second member or trailing bytes would be content
    some gunzip tools show and others drop, so they are refused rather than guessed at."""
    inflater = zlib.decompressobj(_GZIP)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise FormatError(f"segment is not valid gzip ({exc})") from None
    if len(out) > max_bytes:
        raise FormatError(f"segment decompresses to more than {max_bytes} bytes")
    if not inflater.eof:
        raise FormatError("segment is not valid gzip (truncated)")
    if inflater.unused_data:
        raise FormatError(
            f"segment has {len(inflater.unused_data)} bytes after its gzip member (a second "
            "member or trailing data)"
        )
    return out
