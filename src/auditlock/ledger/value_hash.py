"""Hashes that stand in for values a trail must never hold (docs/FORMAT.md section 3,
"Values kept as hashes").

Two kinds, one helper for every capture that records "what changed, never the value":

- `sha256`: contents that are not secret by kind (a watched config file, a ConfigMap
  value). Anyone can check a candidate value against it.
- `hmac-sha256` with a key the trail's writer holds: Secret values. A plain SHA-256 of a
  guessable value (a password from a list, a six-digit PIN) *is* the value to anyone who
  hashes the list, and a trail is read by many and kept for years; with the key, only its
  holder can test a guess. The key is named in the event by `key_id`, never stored.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

SHA256 = "sha256"
HMAC_SHA256 = "hmac-sha256"
# A key shorter than the hash's own output would be the weak point (RFC 2104 section 3).
MIN_KEY_BYTES = 32
_KEY_ID_LABEL = b"auditlock value-hash key id"


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def hasher(key: bytes | None = None) -> Hasher:
    """An incremental hash: SHA-256, or HMAC-SHA256 under `key`."""
    if key is None:
        return hashlib.sha256()
    return hmac.new(key, digestmod=hashlib.sha256)


def value_hash(value: bytes, key: bytes | None = None) -> str:
    """Lowercase hex of SHA-256(value), or of HMAC-SHA256(key, value)."""
    digest = hasher(key)
    digest.update(value)
    return digest.hexdigest()


def key_id(key: bytes) -> str:
    """Which key made a keyed hash (16 hex digits): HMAC-SHA256(key, "auditlock value-hash
    key id"), so an auditor holding a key can tell it is the one, and no one else learns
    anything about it."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]
