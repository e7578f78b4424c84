"""Segment objects (docs/FORMAT.md, "Segments"): consecutive lines of one epoch.

A segment is the lines seq `first`..`last`, each followed by one LF, nothing else; with
the `.gz` name suffix the same bytes are gzip-compressed (RFC 1952).
"""

from __future__ import annotations

import gzip
import zlib

from auditlock.ledger.errors import FormatError


def encode_segment(lines: list[bytes], *, compressed: bool) -> bytes:
    data = b"\n".join(lines) + b"\n"
    # mtime=0 keeps the gzip header deterministic, so a re-sealed segment is byte-identical.
    return gzip.compress(data, compresslevel=6, mtime=0) if compressed else data


def decode_segment(data: bytes, *, compressed: bool) -> list[bytes]:
    """The lines of a segment; FormatError if it is corrupt or truncated."""
    if compressed:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise FormatError(f"segment is not valid gzip ({exc})") from None
    if not data.endswith(b"\n"):
        raise FormatError("segment does not end with a newline (truncated)")
    lines = data.split(b"\n")
    lines.pop()  # the empty string after the final newline
    return lines
