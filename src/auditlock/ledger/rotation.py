"""Key rotation records (docs/FORMAT.md, "Keys").

A rotation record says "key NEW continues the streams signed by key OLD", signed by OLD:

    <body: RFC 8785 JSON {format, old_key_id, new_key_id, new_public_key, time}>\\n
    <base64 Ed25519 signature by the OLD key over the body bytes>\\n

`new_public_key` is the base64 raw 32-byte key; its SHA-256 must equal new_key_id.
Stored at keys/rotations/<old>-<new>.json beside keys/<new>.pub.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.errors import FormatError, KeyFileError
from auditlock.ledger.keys import Signer, key_id, public_pem
from auditlock.ledger.limits import MAX_ROTATION_BYTES
from auditlock.ledger.names import ObjectName, key_name, rotation_name
from auditlock.ledger.signed_record import (
    SignedRecord,
    decode_public_key,
    encode_public_key,
    open_signed_record,
    sign_record,
)
from auditlock.ledger.timestamps import format_ns, parse_ns
from auditlock.sinks.base import Destination, RetentionSpec

FORMAT = "auditlock/rotation/v1"
_FIELDS = frozenset(("format", "old_key_id", "new_key_id", "new_public_key", "time"))


@dataclass(frozen=True)
class Rotation(SignedRecord):
    """Signed by the old key (`old_key_id`)."""

    old_key_id: str
    new_key_id: str
    new_public: Ed25519PublicKey
    time: str

    @property
    def label(self) -> str:
        return f"rotation {self.old_key_id[:12]}"

    def named_by(self, name: ObjectName) -> bool:
        """Whether this is the record its object name says: its old and new keys."""
        return (self.old_key_id, self.new_key_id) == (name.old_key_id, name.key_id)


def encode_rotation(old: Signer, new_public: Ed25519PublicKey, time: str) -> bytes:
    body = canonical_bytes(
        {
            "format": FORMAT,
            "old_key_id": old.key_id,
            "new_key_id": key_id(new_public),
            "new_public_key": encode_public_key(new_public),
            "time": time,
        }
    )
    return sign_record(old, body)


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
        record = Rotation(
            old_key_id=str(raw["old_key_id"]),
            new_key_id=str(raw["new_key_id"]),
            new_public=decode_public_key(raw["new_public_key"], "new_public_key"),
            time=str(raw["time"]),
            body=body,
            signature=signature,
        )
    except (KeyError, ValueError, binascii.Error, KeyFileError) as exc:
        raise FormatError(f"rotation record is incomplete ({exc})") from None
    if key_id(record.new_public) != record.new_key_id:
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
