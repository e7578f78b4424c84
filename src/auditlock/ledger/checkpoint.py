"""Signed checkpoints (docs/FORMAT.md, "Checkpoints").

A checkpoint object is two lines:

    <body: RFC 8785 JSON>\\n
    <base64 (RFC 4648, padded) Ed25519 signature over the body bytes>\\n

The body states the stream's position (epoch, tree size, Merkle root, chain head and the
Merkle frontier), the time, the heartbeat promise and the signing key, and commits to the
previous checkpoint: `prev` = SHA-256 of the previous checkpoint's body bytes (the last
checkpoint of the previous epoch for an epoch's first checkpoint; 32 zero bytes for the
first checkpoint of epoch 0).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.errors import FormatError
from auditlock.ledger.keys import Signer
from auditlock.ledger.limits import MAX_CHECKPOINT_BYTES
from auditlock.ledger.merkle import Frontier
from auditlock.ledger.names import check_stream_id
from auditlock.ledger.timestamps import parse_ns

FORMAT = "auditlock/checkpoint/v1"
# The shortest heartbeat a checkpoint may promise (docs/FORMAT.md, "Checkpoints").
MIN_HEARTBEAT_MS = 1000
KINDS = ("genesis", "seal", "heartbeat", "resume", "close", "abandon")
# Kinds that end an epoch: `close` by its writer, `abandon` by the operator for a writer
# that is gone for good (docs/FORMAT.md, "Abandoned streams").
CLOSING_KINDS = ("close", "abandon")
_FIELDS = frozenset(
    (
        "format",
        "stream",
        "epoch",
        "index",
        "kind",
        "prev",
        "tree_size",
        "root",
        "head",
        "frontier",
        "time",
        "heartbeat_ms",
        "key_id",
    )
)


@dataclass(frozen=True)
class Checkpoint:
    stream: str
    epoch: int
    index: int
    kind: str
    prev: bytes
    tree_size: int
    root: bytes
    head: bytes
    frontier: tuple[bytes, ...]
    time: str
    heartbeat_ms: int
    key_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "stream": self.stream,
            "epoch": self.epoch,
            "index": self.index,
            "kind": self.kind,
            "prev": self.prev.hex(),
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "head": self.head.hex(),
            "frontier": [node.hex() for node in self.frontier],
            "time": self.time,
            "heartbeat_ms": self.heartbeat_ms,
            "key_id": self.key_id,
        }

    def body(self) -> bytes:
        return canonical_bytes(self.to_json())

    @property
    def closed(self) -> bool:
        """The epoch ends here: nothing may follow (a clean close or an abandonment)."""
        return self.kind in CLOSING_KINDS

    @property
    def abandoned(self) -> bool:
        return self.kind == "abandon"

    @functools.cached_property
    def time_ns(self) -> int:
        return parse_ns(self.time)


def body_digest(body: bytes) -> bytes:
    """What the next checkpoint's `prev` holds."""
    return hashlib.sha256(body).digest()


def encode_checkpoint(checkpoint: Checkpoint, signer: Signer) -> tuple[bytes, bytes]:
    """(object bytes, body bytes) of a checkpoint signed by `signer`."""
    body = checkpoint.body()
    signature = base64.b64encode(signer.sign(body))
    return body + b"\n" + signature + b"\n", body


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    body: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        return body_digest(self.body)


def decode_checkpoint(data: bytes) -> SignedCheckpoint:
    """Parse a checkpoint object; FormatError naming the problem. Does not check the signature.

    Bounded for hostile input: the size is capped (limits.py) and the JSON parser has a
    depth limit and never recurses in Python."""
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise FormatError(f"checkpoint is {len(data)} bytes, more than {MAX_CHECKPOINT_BYTES}")
    parts = data.split(b"\n")
    if len(parts) != 3 or parts[2] != b"":
        raise FormatError("a checkpoint is two newline-terminated lines (body, signature)")
    body, sig_text = parts[0], parts[1]
    signature = decode_signature(sig_text, "checkpoint")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FormatError(f"checkpoint body is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise FormatError("checkpoint body is not a JSON object")
    found = raw.get("format")
    if found != FORMAT:
        # Never repr() a planted value whole: it may be deeply nested or huge.
        shown = repr(found[:80]) if isinstance(found, str) else f"a JSON {type(found).__name__}"
        raise FormatError(f"unknown checkpoint format {shown} (expected {FORMAT})")
    if set(raw) != _FIELDS:
        raise FormatError(f"checkpoint members differ from {FORMAT}: {sorted(set(raw) ^ _FIELDS)}")
    try:
        checkpoint = Checkpoint(
            stream=check_stream_id(_str(raw, "stream")),
            epoch=_int(raw, "epoch"),
            index=_int(raw, "index"),
            kind=_str(raw, "kind"),
            prev=_hash(raw, "prev"),
            tree_size=_int(raw, "tree_size"),
            root=_hash(raw, "root"),
            head=_hash(raw, "head"),
            frontier=tuple(_hash_value(v, "frontier") for v in _list(raw, "frontier")),
            time=_str(raw, "time"),
            heartbeat_ms=_int(raw, "heartbeat_ms"),
            key_id=_str(raw, "key_id"),
        )
        parse_ns(checkpoint.time)
    except ValueError as exc:
        raise FormatError(f"checkpoint body: {exc}") from None
    if checkpoint.heartbeat_ms < MIN_HEARTBEAT_MS:
        raise FormatError(
            f"checkpoint heartbeat_ms {checkpoint.heartbeat_ms} is below {MIN_HEARTBEAT_MS}"
        )
    if checkpoint.kind not in KINDS:
        raise FormatError(f"checkpoint kind {checkpoint.kind!r} is not one of {KINDS}")
    if len(checkpoint.key_id) != 64 or any(c not in "0123456789abcdef" for c in checkpoint.key_id):
        raise FormatError("checkpoint key_id is not 64 lowercase hex digits")
    if checkpoint.body() != body:
        raise FormatError("checkpoint body is not in canonical (RFC 8785) form")
    try:
        frontier = Frontier(checkpoint.tree_size, checkpoint.frontier)
    except ValueError as exc:
        raise FormatError(f"checkpoint frontier: {exc}") from None
    if frontier.root() != checkpoint.root:
        raise FormatError("checkpoint root is not the root of its frontier")
    if (checkpoint.kind == "genesis") != (checkpoint.index == 0):
        raise FormatError("the first checkpoint of an epoch, and only it, has kind genesis")
    if checkpoint.kind == "genesis" and checkpoint.tree_size != 0:
        raise FormatError("a genesis checkpoint covers no events (tree_size 0)")
    return SignedCheckpoint(checkpoint, body, signature)


def decode_signature(text: bytes, what: str) -> bytes:
    """A signature line: the canonical padded base64 (RFC 4648 section 4) of 64 bytes.

    Canonical means re-encoding gives the same text: no whitespace, and the unused low
    bits of the last character zero (`...Q==`, never `...R==`), so one signature has one
    stored form, as every other part of the format does."""
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what} signature line is not base64") from None
    if len(signature) != 64:
        raise FormatError(f"{what} signature is {len(signature)} bytes, not 64")
    if base64.b64encode(signature) != text:
        raise FormatError(f"{what} signature is not canonical base64 (non-zero pad bits)")
    return signature


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw[key]
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw[key]
    if not isinstance(value, list):
        raise ValueError(f"{key} must be an array")
    return value


def _hash(raw: dict[str, Any], key: str) -> bytes:
    return _hash_value(raw[key], key)


def _hash_value(value: Any, key: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64 or value != value.lower():
        raise ValueError(f"{key} must be 64 lowercase hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{key} must be 64 lowercase hex digits") from None
