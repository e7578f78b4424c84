"""The two lines every signed record of the trail shares (rotations, certificates,
witness records; FORMAT.md): a JSON body naming its `format`, then the base64 signature
over the body; and the public key members rotations and certificates carry.

Bounded for hostile input: the size is capped (limits.py) and orjson's depth limit
holds (it never recurses in Python). What the members mean, and that the body is in
canonical form, each record's own decoder checks.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.checkpoint import decode_signature
from auditlock.ledger.errors import FormatError
from auditlock.ledger.keys import Signer, public_from_raw, raw_public, verify


@dataclass(frozen=True)
class SignedRecord:
    """A decoded record: its body's bytes and the signature over them."""

    body: bytes
    signature: bytes

    @property
    def label(self) -> str:
        """The record in a SignatureError's message."""
        raise NotImplementedError

    def verify_with(self, signer: Ed25519PublicKey) -> None:
        """SignatureError unless `signer` signed this record."""
        verify(signer, self.signature, self.body, self.label)


def sign_record(signer: Signer, body: bytes) -> bytes:
    """The record's two lines: `body`, then the signature over it."""
    return body + b"\n" + base64.b64encode(signer.sign(body)) + b"\n"


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


def encode_public_key(public: Ed25519PublicKey) -> str:
    """A public key member: the base64 of the raw 32-byte key."""
    return base64.b64encode(raw_public(public)).decode()


def decode_public_key(text: str, member: str) -> Ed25519PublicKey:
    """A public key member, which must be the canonical base64 of a raw Ed25519 key;
    ValueError, binascii.Error or KeyFileError naming the problem."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise ValueError(f"{member} is not canonical base64")
    return public_from_raw(raw)
