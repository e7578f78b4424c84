"""The policy's Ed25519 signing key: generation, fingerprint, and what goes in its Secret.

The private key is only ever in the Secret's data and in the collector's mounted file.
Nothing here logs it, and `SigningKeyMaterial.__repr__` hides it so an accidental log
line or traceback cannot leak it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditlock.operator.names import KEY_FILE, PUBLIC_KEY_FILE


class KeySecretError(Exception):
    """The key Secret exists but does not hold a usable Ed25519 key."""


@dataclass(frozen=True)
class SigningKeyMaterial:
    private_pem: bytes = field(repr=False)
    public_pem: bytes
    fingerprint: str

    def secret_data(self) -> dict[str, str]:
        """The Secret's `data` (base64 values)."""
        return {
            KEY_FILE: base64.b64encode(self.private_pem).decode(),
            PUBLIC_KEY_FILE: base64.b64encode(self.public_pem).decode(),
        }


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """Key id: SHA-256 of the raw 32-byte public key, hex (as in docs/FORMAT.md)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate() -> SigningKeyMaterial:
    private = Ed25519PrivateKey.generate()
    return _material(private)


def _material(private: Ed25519PrivateKey) -> SigningKeyMaterial:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKeyMaterial(private_pem, public_pem, fingerprint(public))


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
