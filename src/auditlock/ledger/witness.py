"""Witness records (docs/FORMAT.md section 16): what the operator saw in a store.

A record is two lines, like a checkpoint:

    <body: RFC 8785 JSON {format, witness, seq, prev, time, interval_ms, key_id, streams}>\\n
    <base64 Ed25519 signature over the body bytes>\\n

`streams` names, for each stream, its newest checkpoint as the witness read it (epoch,
index, tree_size and the digest of its BODY). Records of one witness chain by `prev`, so
one deleted or replaced after the next was written is detectable, and are stored at
`witness/<witness>/<seq:012>.json`, each optionally beside an RFC 3161 token
(`<name>.tsr`, trusted_time.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from auditlock.ledger.canonical import MAX_SAFE_INTEGER, canonical_bytes
from auditlock.ledger.errors import FormatError
from auditlock.ledger.keys import Signer
from auditlock.ledger.limits import MAX_WITNESS_BYTES
from auditlock.ledger.names import STREAM_PATTERN, check_stream_id
from auditlock.ledger.newest import StreamTip
from auditlock.ledger.signed_record import open_signed_record, sign_record
from auditlock.ledger.timestamps import format_ns, normalize_time, parse_ns
from auditlock.sinks.base import Destination

FORMAT = "auditlock/witness/v1"
ZERO_DIGEST = bytes(32)
MIN_INTERVAL_MS = 1000
PREFIX = "witness/"
TOKEN_SUFFIX = ".tsr"
_FIELDS = frozenset(
    ("format", "witness", "seq", "prev", "time", "interval_ms", "key_id", "streams")
)
_ENTRY_FIELDS = frozenset(("stream", "epoch", "index", "tree_size", "digest"))
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_NAME = re.compile(
    r"witness/(?P<witness>" + STREAM_PATTERN + r")/(?P<seq>\d{12})\.json(?P<tsr>\.tsr)?\Z"
)


@dataclass(frozen=True, slots=True)
class Witnessed:
    """One stream's newest checkpoint as the witness read it."""

    stream: str
    epoch: int
    index: int
    tree_size: int
    digest: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "epoch": self.epoch,
            "index": self.index,
            "tree_size": self.tree_size,
            "digest": self.digest.hex(),
        }


@dataclass(frozen=True)
class WitnessRecord:
    witness: str
    seq: int
    prev: bytes
    time: str
    interval_ms: int
    key_id: str
    streams: tuple[Witnessed, ...]

    def body(self) -> bytes:
        return canonical_bytes(
            {
                "format": FORMAT,
                "witness": self.witness,
                "seq": self.seq,
                "prev": self.prev.hex(),
                "time": self.time,
                "interval_ms": self.interval_ms,
                "key_id": self.key_id,
                "streams": [entry.to_json() for entry in self.streams],
            }
        )

    @property
    def time_ns(self) -> int:
        return parse_ns(self.time)


@dataclass(frozen=True)
class SignedWitnessRecord:
    record: WitnessRecord
    body: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.body).digest()


@dataclass(frozen=True)
class WitnessName:
    name: str
    witness: str
    seq: int
    token: bool  # the `.tsr` beside a record


def record_name(witness: str, seq: int) -> str:
    return f"{PREFIX}{witness}/{seq:012d}.json"


def token_name(record: str) -> str:
    return record + TOKEN_SUFFIX


def witness_prefix(witness: str) -> str:
    return f"{PREFIX}{witness}/"


def parse_witness_name(name: str) -> WitnessName | None:
    """What a `witness/...` object name says; None if it is not one FORMAT.md defines."""
    m = _NAME.match(name)
    if m is None:
        return None
    return WitnessName(name, m["witness"], int(m["seq"]), m["tsr"] is not None)


def sorted_entries(entries: Iterable[Witnessed]) -> tuple[Witnessed, ...]:
    return tuple(sorted(entries, key=lambda entry: entry.stream))


def encode_record(record: WitnessRecord, signer: Signer) -> bytes:
    """The stored bytes of `record` signed by `signer` (whose id must be its key_id)."""
    if record.key_id != signer.key_id:
        raise ValueError("the record's key_id is not the signer's")
    body = record.body()
    if len(body) + 90 > MAX_WITNESS_BYTES:
        raise FormatError(
            f"a witness record of {len(record.streams)} streams would be {len(body)} bytes, "
            f"more than FORMAT.md allows ({MAX_WITNESS_BYTES})"
        )
    return sign_record(signer, body)


def witnessed(tips: Iterable[StreamTip]) -> tuple[Witnessed, ...]:
    """What a record says about these newest checkpoints: the readable ones, by stream
    (an unreadable one is the trail watcher's to report, FORMAT.md section 16)."""
    return sorted_entries(
        Witnessed(tip.stream, tip.epoch, tip.index, tip.signed.checkpoint.tree_size, tip.digest)
        for tip in tips
        if tip.signed is not None and tip.digest is not None
    )


@dataclass(frozen=True)
class ChainEnd:
    """Where a witness's chain continues: the next seq and its `prev`."""

    seq: int
    prev: bytes

    def record(
        self,
        witness: str,
        signer: Signer,
        entries: tuple[Witnessed, ...],
        *,
        time_ns: int,
        interval_ms: int,
    ) -> tuple[str, bytes]:
        """(object name, stored bytes) of the next record."""
        record = WitnessRecord(
            witness,
            self.seq,
            self.prev,
            format_ns(time_ns),
            max(MIN_INTERVAL_MS, interval_ms),
            signer.key_id,
            entries,
        )
        return record_name(witness, self.seq), encode_record(record, signer)

    def after(self, data: bytes) -> ChainEnd:
        """The end once `data` is stored as record `seq`."""
        return ChainEnd(self.seq + 1, first_line_digest(data))


def chain_end(destination: Destination, witness: str) -> ChainEnd:
    """Where the chain of `witness` in `destination` continues (FORMAT.md section 16,
    "Writing"): after its highest stored seq, whether or not that record verifies.
    DestinationError propagates."""
    highest: WitnessName | None = None
    for name in destination.list(witness_prefix(witness)):
        parsed = parse_witness_name(name)
        if parsed is None or parsed.token or parsed.witness != witness:
            continue
        if highest is None or parsed.seq > highest.seq:
            highest = parsed
    if highest is None:
        return ChainEnd(0, ZERO_DIGEST)
    data = destination.get(highest.name, max_bytes=MAX_WITNESS_BYTES)
    return ChainEnd(highest.seq + 1, first_line_digest(data))


def first_line_digest(data: bytes) -> bytes:
    """What the next record's `prev` holds: H(BODY), BODY being everything before the
    first LF (the writer continues a chain whether or not its newest record verifies)."""
    return hashlib.sha256(data.split(b"\n", 1)[0]).digest()


def decode_record(data: bytes) -> SignedWitnessRecord:
    """Parse a witness record; FormatError naming the problem. Does not check the
    signature. Bounded for hostile input: the size is capped and orjson's depth limit
    holds (it never recurses in Python)."""
    raw, body, signature = open_signed_record(
        data, "witness record", max_bytes=MAX_WITNESS_BYTES, format=FORMAT, fields=_FIELDS
    )
    record = WitnessRecord(
        witness=_text(raw, "witness"),
        seq=_count(raw, "seq"),
        prev=_digest(raw["prev"], "prev"),
        time=_time(raw),
        interval_ms=_count(raw, "interval_ms"),
        key_id=_digest(raw["key_id"], "key_id").hex(),
        streams=_entries(raw["streams"]),
    )
    try:
        check_stream_id(record.witness)
    except ValueError as exc:
        raise FormatError(f"witness name: {exc}") from None
    if record.interval_ms < MIN_INTERVAL_MS:
        raise FormatError(f"interval_ms {record.interval_ms} is below {MIN_INTERVAL_MS}")
    if canonical_bytes(raw) != body:
        raise FormatError("witness record body is not in canonical (RFC 8785) form")
    return SignedWitnessRecord(record, body, signature)


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise FormatError(f"witness record member {key} must be a string")
    return value


def _count(raw: dict[str, Any], key: str, where: str = "witness record") -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise FormatError(f"{where} member {key} must be an integer in 0..2^53-1")
    return value


def _digest(value: Any, key: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise FormatError(f"witness record member {key} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


def _time(raw: dict[str, Any]) -> str:
    text = _text(raw, "time")
    try:
        if normalize_time(text) != text:
            raise ValueError("not in the stored form")
    except ValueError as exc:
        raise FormatError(f"witness record time {text[:40]!r}: {exc}") from None
    return text


def _entries(value: Any) -> tuple[Witnessed, ...]:
    if not isinstance(value, list):
        raise FormatError("witness record member streams must be an array")
    entries: list[Witnessed] = []
    for item in value:
        if not isinstance(item, dict) or set(item) != _ENTRY_FIELDS:
            raise FormatError(
                "each witnessed stream has exactly the members digest, epoch, index, stream, "
                "tree_size"
            )
        stream = item["stream"]
        if not isinstance(stream, str):
            raise FormatError("a witnessed stream id must be a string")
        try:
            check_stream_id(stream)
        except ValueError as exc:
            raise FormatError(f"witnessed stream: {exc}") from None
        entry = Witnessed(
            stream,
            _count(item, "epoch", "witnessed stream"),
            _count(item, "index", "witnessed stream"),
            _count(item, "tree_size", "witnessed stream"),
            _digest(item["digest"], "digest"),
        )
        if entries and entries[-1].stream >= stream:
            raise FormatError("witnessed streams must be sorted by stream id, each once")
        entries.append(entry)
    return tuple(entries)
