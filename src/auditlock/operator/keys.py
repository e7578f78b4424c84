"""The policy's Ed25519 signing key: generation, key id, and what goes in its Secret.

The private key is only ever in the Secret's data and in the collector's mounted file.
Nothing here logs it, and `SigningKeyMaterial.__repr__` hides it so an accidental log
line or traceback cannot leak it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlock.ledger import keys as ledger_keys
from auditlock.ledger.keys import key_id, private_pem, public_pem
from auditlock.operator.names import KEY_FILE, PUBLIC_KEY_FILE


class KeySecretError(Exception):
    """The key Secret exists but does not hold a usable Ed25519 key."""


@dataclass(frozen=True)
class SigningKeyMaterial:
    private_pem: bytes = field(repr=False)
    public_pem: bytes
    key_id: str  # what status calls keyFingerprint (docs/FORMAT.md, key ids)

    def secret_data(self) -> dict[str, str]:
        """The Secret's `data` (base64 values)."""
        return {
            KEY_FILE: base64.b64encode(self.private_pem).decode(),
            PUBLIC_KEY_FILE: base64.b64encode(self.public_pem).decode(),
        }


def generate() -> SigningKeyMaterial:
    return _material(ledger_keys.generate())


def material_of(private: Ed25519PrivateKey) -> SigningKeyMaterial:
    """A key already loaded (the operator's root key) as key material."""
    return _material(private)


def _material(private: Ed25519PrivateKey) -> SigningKeyMaterial:
    public = private.public_key()
    return SigningKeyMaterial(private_pem(private), public_pem(public), key_id(public))


def from_secret_data(data: dict[str, str] | None, secret_name: str) -> SigningKeyMaterial:
    """Load the key from an existing Secret's `data`; the error never quotes the key."""
    encoded = (data or {}).get(KEY_FILE)
    if not encoded:
        raise KeySecretError(f"Secret {secret_name} has no {KEY_FILE} entry")
    try:
        private = serialization.load_pem_private_key(base64.b64decode(encoded), password=None)
    except (ValueError, TypeError) as exc:
        raise KeySecretError(
            f"Secret {secret_name} entry {KEY_FILE} is not an unencrypted PEM private key"
        ) from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeySecretError(f"Secret {secret_name} entry {KEY_FILE} is not an Ed25519 key")
    return _material(private)
