"""Key rotation records (docs/FORMAT.md, "Keys").

A rotation record says "key NEW continues the streams signed by key OLD", signed by OLD:

    <body: RFC 8785 JSON {format, old_key_id, new_key_id, new_public_key, time}>\\n
    <base64 Ed25519 signature by the OLD key over the body bytes>\\n

`new_public_key` is the base64 raw 32-byte key; its SHA-256 must equal new_key_id.
Stored at keys/rotations/<old>-<new>.json beside keys/<new>.pub.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.errors import FormatError, KeyFileError
from auditlock.ledger.keys import Signer, key_id, public_from_raw, public_pem, raw_public, verify
from auditlock.ledger.limits import MAX_ROTATION_BYTES
from auditlock.ledger.names import key_name, rotation_name
from auditlock.ledger.signed_record import open_signed_record
from auditlock.ledger.timestamps import format_ns, parse_ns
from auditlock.sinks.base import Destination, RetentionSpec

FORMAT = "auditlock/rotation/v1"
_FIELDS = frozenset(("format", "old_key_id", "new_key_id", "new_public_key", "time"))


@dataclass(frozen=True)
class Rotation:
    old_key_id: str
    new_key_id: str
    new_public: Ed25519PublicKey
    time: str
    body: bytes
    signature: bytes

    def verify_with(self, old_public: Ed25519PublicKey) -> None:
        """SignatureError unless the old key signed this record."""
        verify(old_public, self.signature, self.body, f"rotation {self.old_key_id[:12]}")


def encode_rotation(old: Signer, new_public: Ed25519PublicKey, time: str) -> bytes:
    body = canonical_bytes(
        {
            "format": FORMAT,
            "old_key_id": old.key_id,
            "new_key_id": key_id(new_public),
            "new_public_key": base64.b64encode(raw_public(new_public)).decode(),
            "time": time,
        }
    )
    return body + b"\n" + base64.b64encode(old.sign(body)) + b"\n"


def decode_rotation(data: bytes) -> Rotation:
    """Parse a rotation record; FormatError naming the problem. Bounded for hostile input:
    the size is capped (limits.py) and the JSON parser has a depth limit and never
    recurses in Python."""
    raw, body, signature = open_signed_record(
        data,
        "rotation record",
        max_bytes=MAX_ROTATION_BYTES,
        format=FORMAT,
        fields=_FIELDS,
        short="rotation",
    )
    if not all(isinstance(raw[k], str) for k in _FIELDS):
        raise FormatError("rotation record members must be strings")
    if canonical_bytes(raw) != body:
        raise FormatError("rotation record body is not in canonical (RFC 8785) form")
    try:
        parse_ns(raw["time"])
        new_raw = base64.b64decode(raw["new_public_key"], validate=True)
        if base64.b64encode(new_raw).decode() != raw["new_public_key"]:
            raise ValueError("new_public_key is not canonical base64")
        record = Rotation(
            old_key_id=str(raw["old_key_id"]),
            new_key_id=str(raw["new_key_id"]),
            new_public=public_from_raw(new_raw),
            time=str(raw["time"]),
            body=body,
            signature=signature,
        )
    except (KeyError, ValueError, binascii.Error, KeyFileError) as exc:
        raise FormatError(f"rotation record is incomplete ({exc})") from None
    if hashlib.sha256(new_raw).hexdigest() != record.new_key_id:
        raise FormatError("rotation record's new_public_key does not match new_key_id")
    return record


def publish_rotation(
    destination: Destination,
    old: Signer,
    new_public: Ed25519PublicKey,
    *,
    retention: RetentionSpec | None,
    time_ns: int,
) -> list[str]:
    """Store keys/<new>.pub and the rotation record signed by `old`; return their names."""
    new_id = key_id(new_public)
    record = encode_rotation(old, new_public, format_ns(time_ns))
    names = [key_name(old.key_id), key_name(new_id), rotation_name(old.key_id, new_id)]
    destination.put(names[0], public_pem(old.public), retention)
    destination.put(names[1], public_pem(new_public), retention)
    destination.put(names[2], record, retention)
    return names
