"""Google Cloud credentials for tests that need no server: a fresh service-account key."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

EMAIL = "trail-writer@acme.iam.gserviceaccount.com"


def service_account_info() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "client_email": EMAIL,
        "private_key": pem,
        "token_uri": "https://oauth2.googleapis.com/token",
        "project_id": "acme",
    }
