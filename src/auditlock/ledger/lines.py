"""Event lines and the hash chain (docs/FORMAT.md, "Lines").

Each stored line is the RFC 8785 encoding of the envelope

    {"epoch":E,"event":<canonical event>,"prev":"<64 hex>","seq":N,"stream":"<id>"}

Member order is already sorted and every member but `event` is ASCII that needs no
escaping, so the line is built by formatting bytes around the canonical event: fast, and
still exactly the canonical encoding of the envelope.

The event hash is the RFC 9162 leaf hash of the line, SHA-256(0x00 || line). `prev` is
the previous line's event hash in the same epoch; the first line of an epoch has 32 zero
bytes. `seq` starts at 0 in each epoch and has no gaps: line `seq` is Merkle leaf `seq`.
"""

from __future__ import annotations

import binascii
import hashlib

ZERO_HASH = bytes(32)

_sha256 = hashlib.sha256


def encode_line(stream: bytes, epoch: int, seq: int, prev: bytes, event: bytes) -> bytes:
    """The line for canonical `event` bytes at (stream, epoch, seq) after hash `prev`."""
    return b'{"epoch":%d,"event":%b,"prev":"%b","seq":%d,"stream":"%b"}' % (
        epoch, event, binascii.hexlify(prev), seq, stream,
    )  # fmt: skip


def line_prefix(epoch: int) -> bytes:
    """Every line of epoch E starts with these bytes."""
    return b'{"epoch":%d,"event":' % epoch


def line_suffix(stream: bytes, seq: int, prev: bytes) -> bytes:
    """Line `seq` of `stream` after hash `prev` ends with these bytes."""
    return b',"prev":"%b","seq":%d,"stream":"%b"}' % (binascii.hexlify(prev), seq, stream)


def event_hash(line: bytes) -> bytes:
    """SHA-256(0x00 || line): the chain hash and the Merkle leaf hash of a line."""
    return _sha256(b"\x00" + line).digest()


def event_bytes(line: bytes, epoch: int) -> bytes:
    """The canonical event inside a line whose structure was already checked."""
    start = len(line_prefix(epoch))
    end = line.rindex(b',"prev":"')
    return line[start:end]
