"""Event lines and the hash chain (docs/FORMAT.md, "Lines"): the ledger's wire format,
written once. The writer, the verifier, resume, the Merkle code and proofs all build and
take apart lines here.

Each stored line is the RFC 8785 encoding of the envelope

    {"epoch":E,"event":<canonical event>,"prev":"<64 hex>","seq":N,"stream":"<id>"}

Member order is already sorted and every member but `event` is ASCII that needs no
escaping, so the line is built by formatting bytes around the canonical event: fast, and
still exactly the canonical encoding of the envelope. For the same reason a reader checks
a line without a JSON parser: it starts with `line_prefix(E)` and ends with
`line_suffix(stream, N, prev)`; the event is the bytes between them.

The event hash is the RFC 9162 leaf hash of the line, SHA-256(0x00 || line). `prev` is
the previous line's event hash in the same epoch; the first line of an epoch has 32 zero
bytes. `seq` starts at 0 in each epoch and has no gaps: line `seq` is Merkle leaf `seq`.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence

from auditlock.ledger.build_hash import sha256 as build_sha256

ZERO_HASH = bytes(32)
# Where the event ends: the first envelope member after it. A canonical event can hold
# these bytes only inside a string, escaped (`\"prev\"`), so the last occurrence in a
# line is the envelope's own.
PREV_MARK = b',"prev":"'

_sha256 = hashlib.sha256
_hexlify = binascii.hexlify
# SHA-256 with the leaf prefix already absorbed: copying it is cheaper than prepending
# 0x00 to every line.
_LEAF = _sha256(b"\x00")


def event_hash(line: bytes) -> bytes:
    """SHA-256(0x00 || line): the chain hash and the Merkle leaf hash of a line."""
    h = _LEAF.copy()
    h.update(line)
    return h.digest()


def line_prefix(epoch: int) -> bytes:
    """Every line of epoch E starts with these bytes."""
    return b'{"epoch":%d,"event":' % epoch


def line_suffix(stream: bytes, seq: int, prev: bytes) -> bytes:
    """Line `seq` of `stream` after hash `prev` ends with these bytes."""
    return b'%b"%b","seq":%d,"stream":"%b"}' % (PREV_MARK, _hexlify(prev), seq, stream)


class LineFormat:
    """The envelope of one stream's epoch: what every line of it starts and ends with.

    `chain` builds lines (the writer), `suffixes` says what stored lines must end with
    (the verifier's fast path), `claimed_*` read what a line that failed says about
    itself (the verifier's diagnosis, resume's orphan segments)."""

    __slots__ = ("_form", "prefix", "stream", "tail")

    def __init__(self, stream: bytes, epoch: int) -> None:
        self.stream = stream
        self.prefix = line_prefix(epoch)
        self.tail = b',"stream":"' + stream + b'"}'
        self._form = PREV_MARK + b'%b","seq":%d' + self.tail

    def chain(
        self, events: Sequence[bytes], seq: int, prev: bytes
    ) -> tuple[list[bytes], list[bytes]]:
        """The lines of canonical `events` from `seq` on, after hash `prev`, and their
        event hashes."""
        line_form = self.prefix + b"%b" + self._form
        digest, hexlify = build_sha256, _hexlify
        lines: list[bytes] = []
        leaves: list[bytes] = []
        add_line, add_leaf = lines.append, leaves.append
        for event in events:
            line = line_form % (event, hexlify(prev), seq)
            prev = digest(b"\x00" + line)  # event_hash(line), by build_hash's SHA-256
            add_line(line)
            add_leaf(prev)
            seq += 1
        return lines, leaves

    def suffixes(self, seq: int, prevs: Sequence[bytes]) -> list[bytes]:
        """What lines seq, seq+1, ... must end with, given each one's `prev` hash."""
        hexes = _hexlify(b"".join(prevs))
        form = self._form
        return [form % (hexes[i * 64 : i * 64 + 64], seq + i) for i in range(len(prevs))]

    def suffix(self, seq: int, prev: bytes) -> bytes:
        return self._form % (_hexlify(prev), seq)

    def fits(self, line: bytes, seq: int, prev: bytes) -> bool:
        """Line `seq` after hash `prev` has exactly this envelope."""
        return line.startswith(self.prefix) and line.endswith(self._form % (_hexlify(prev), seq))

    def claimed_seq(self, line: bytes) -> int | None:
        """The seq a line of this stream and epoch names; None for any other line."""
        tail = self.tail
        if not (line.startswith(self.prefix) and line.endswith(tail)):
            return None
        at = line.rfind(b',"seq":', 0, len(line) - len(tail) + 1)
        digits = line[at + 7 : len(line) - len(tail)]
        if at < 0 or not digits.isdigit() or len(digits) > 12:
            return None
        return int(digits)


def leaf_hashes(lines: Sequence[bytes]) -> list[bytes]:
    """The event hash of every line."""
    leaf = _LEAF
    out: list[bytes] = []
    add = out.append
    for line in lines:
        h = leaf.copy()
        h.update(line)
        add(h.digest())
    return out


def claimed_prev(line: bytes) -> bytes | None:
    """The `prev` hash a line names; None if it names none that parses."""
    marker = line.rfind(PREV_MARK)
    try:
        return bytes.fromhex(line[marker + 9 : marker + 73].decode())
    except (ValueError, UnicodeDecodeError):
        return None
