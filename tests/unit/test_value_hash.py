"""The hashes that stand in for Secret values and config file contents
(auditlock.ledger.value_hash; docs/FORMAT.md section 3, "Values kept as hashes")."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from auditlock.ledger.value_hash import hasher, key_id, value_hash

KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)


def test_known_answers() -> None:
    # RFC 4231 test case 2 ("Jefe") is HMAC-SHA256 itself: the same function.
    assert value_hash(b"what do ya want for nothing?", b"Jefe") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert value_hash(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_incremental_equals_whole() -> None:
    digest = hasher(KEY)
    for part in (b"hun", b"ter", b"2"):
        digest.update(part)
    assert digest.hexdigest() == value_hash(b"hunter2", KEY)
    assert value_hash(b"hunter2", KEY) != value_hash(b"hunter2")


def test_key_id_names_the_key_without_showing_it() -> None:
    assert len(key_id(KEY)) == 16
    assert key_id(KEY) != key_id(bytes(32))
    assert key_id(KEY) not in value_hash(KEY)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_the_auditors_openssl_recipe_gives_the_same_hash() -> None:
    """docs/operator.md, "Checking a value": an auditor holding the key checks a value
    with openssl alone."""
    answer = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{KEY.hex()}"],
        input=b"hunter2",
        capture_output=True,
        check=True,
    )
    assert answer.stdout.decode().split()[-1] == value_hash(b"hunter2", KEY)
