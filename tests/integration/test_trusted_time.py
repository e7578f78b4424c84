"""RFC 3161 timestamp tokens against real TSAs (OpenSSL's, and sigstore's
timestamp-authority), read back with auditlock and with `openssl ts -verify` alone
(docs/FORMAT.md, "Timestamp tokens")."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from auditlock import sinks
from auditlock.ledger import trusted_time
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.synth import synthesize
from auditlock.ledger.trusted_time import (
    TIMESTAMP_INVALID,
    TIMESTAMP_MISMATCH,
    TIMESTAMP_UNTRUSTED,
    TimestampError,
    load_certificates,
    request_token,
    verify_token,
)
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.witness import Witness, WitnessMetrics, WitnessSettings
from auditlock.policy import parse_spec
from tests.helpers.policies import file_spec
from tests.servers.timestamp_authority import SigstoreTsa
from tests.servers.tsa import OpensslTsa, make_ca, make_tsa_certificate

RECORD = b'{"kind":"witness","streams":[]}\n'
OPENSSL_VERIFY = [
    *("openssl", "ts", "-verify", "-data", "record"),
    *("-in", "record.tsr", "-CAfile", "roots.pem"),
]


def openssl_verify(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(OPENSSL_VERIFY, cwd=folder, capture_output=True, text=True, check=False)


@pytest.fixture
def tsa(openssl_tsa: OpensslTsa) -> Iterator[OpensslTsa]:
    openssl_tsa.mode = "honest"
    try:
        yield openssl_tsa
    finally:
        openssl_tsa.mode = "honest"


def _request(tsa: OpensslTsa, message: bytes = RECORD) -> bytes:
    async def ask() -> bytes:
        async with aiohttp.ClientSession() as session:
            return await request_token(session, tsa.url, message, time_limit=30)

    return asyncio.run(ask())


@pytest.fixture(scope="module")
def token(openssl_tsa: OpensslTsa) -> bytes:
    openssl_tsa.mode = "honest"
    return _request(openssl_tsa)


def test_a_token_from_a_real_tsa_proves_when_the_record_existed(
    tsa: OpensslTsa, token: bytes
) -> None:
    proved = verify_token(token, RECORD, load_certificates(tsa.root_pem))
    assert proved.tsa == "CN=auditlock test TSA"
    assert abs(proved.gen_time - datetime.now(UTC)) < timedelta(minutes=5)
    assert proved.gen_time.tzinfo is not None
    assert proved.serial_number > 0


def test_openssl_alone_verifies_the_stored_token(
    tsa: OpensslTsa, token: bytes, tmp_path: Path
) -> None:
    """FORMAT.md promises a third party needs no auditlock code to check a token."""
    (tmp_path / "record").write_bytes(RECORD)
    (tmp_path / "record.tsr").write_bytes(token)
    (tmp_path / "roots.pem").write_bytes(tsa.root_pem)
    done = openssl_verify(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Verification: OK" in done.stdout
    (tmp_path / "record").write_bytes(RECORD.replace(b"[]", b"[1]"))
    done = openssl_verify(tmp_path)
    assert done.returncode != 0


def test_a_token_over_other_bytes_is_a_mismatch(tsa: OpensslTsa, token: bytes) -> None:
    with pytest.raises(TimestampError) as caught:
        verify_token(token, RECORD + b" ", load_certificates(tsa.root_pem))
    assert caught.value.code == TIMESTAMP_MISMATCH


def test_a_token_from_a_tsa_outside_the_roots_is_untrusted(token: bytes) -> None:
    _, stranger = make_ca("another root")
    with pytest.raises(TimestampError) as caught:
        verify_token(token, RECORD, [stranger])
    assert caught.value.code == TIMESTAMP_UNTRUSTED


def test_a_tsa_certificate_without_the_timestamping_usage_is_untrusted(
    tmp_path: Path,
) -> None:
    """A certificate that chains to the root but was not issued for time-stamping (here: the
    root's own key signs an ordinary leaf) cannot make a token the verifier accepts."""
    with OpensslTsa(tmp_path / "bad") as rogue:
        ca_key, _ = make_ca("unused")
        key, leaf = make_tsa_certificate(ca_key, rogue.root, "not a TSA")
        # Rewrite the TSA's signer as a leaf signed by a different key than the root's:
        # its chain to rogue.root cannot verify.
        from cryptography.hazmat.primitives import serialization

        (rogue.dir / "tsa.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (rogue.dir / "tsa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        token = _request(rogue)
        with pytest.raises(TimestampError) as caught:
            verify_token(token, RECORD, [rogue.root])
    assert caught.value.code == TIMESTAMP_UNTRUSTED


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_no_altered_token_verifies(tsa: OpensslTsa, token: bytes, data: st.DataObject) -> None:
    """Flip, cut or extend a real token anywhere: it never verifies, and the failure is a
    TimestampError with a FORMAT.md code, never another exception."""
    position = data.draw(st.integers(0, len(token) - 1))
    how = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if how == "flip":
        bit = data.draw(st.integers(0, 7))
        altered = bytearray(token)
        altered[position] ^= 1 << bit
        changed = bytes(altered)
    elif how == "truncate":
        changed = token[:position]
    else:
        changed = token + data.draw(st.binary(min_size=1, max_size=16))
    roots = load_certificates(tsa.root_pem)
    try:
        verify_token(changed, RECORD, roots)
    except TimestampError as err:
        assert err.code in {TIMESTAMP_INVALID, TIMESTAMP_MISMATCH, TIMESTAMP_UNTRUSTED}
    else:
        # DER has a few bits no signature covers (e.g. in unsigned attributes or the
        # outer status text); a change there must still prove the same thing.
        assert verify_token(token, RECORD, roots) == verify_token(changed, RECORD, roots)


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("garbage", TIMESTAMP_INVALID),
        ("huge", TIMESTAMP_INVALID),
        ("other-bytes", TIMESTAMP_MISMATCH),
        ("http-error", TIMESTAMP_INVALID),
    ],
)
def test_a_hostile_or_broken_tsa_is_refused_at_request_time(
    tsa: OpensslTsa, mode: str, code: str
) -> None:
    tsa.mode = mode  # type: ignore[assignment]
    with pytest.raises(TimestampError) as caught:
        _request(tsa)
    assert caught.value.code == code
    assert str(caught.value)


def test_a_rejection_from_the_tsa_is_not_a_token(tsa: OpensslTsa) -> None:
    """OpenSSL answers a request it cannot parse with a PKIStatus rejection."""
    rejection = tsa.reply(b"\x30\x00")
    with pytest.raises(TimestampError) as caught:
        verify_token(rejection, RECORD, load_certificates(tsa.root_pem))
    assert caught.value.code == TIMESTAMP_INVALID
    assert "did not grant" in str(caught.value)


def test_oversized_tokens_are_refused_before_decoding(tsa: OpensslTsa) -> None:
    huge = b"\x30\x84" + b"\x00" * (trusted_time.MAX_RESPONSE_BYTES + 1)
    with pytest.raises(TimestampError) as caught:
        verify_token(huge, RECORD, load_certificates(tsa.root_pem))
    assert caught.value.code == TIMESTAMP_INVALID


def test_sigstores_timestamp_authority_stamps_witness_records(
    sigstore_tsa: SigstoreTsa, tmp_path: Path
) -> None:
    """The operator's witness, timestamped by sigstore's timestamp-authority (a second
    real TSA, in Go, with a root, an intermediate and a leaf): each record's token
    verifies with the chain that TSA serves, and a token with one byte changed is a
    finding."""
    store = sinks.open(f"file://{tmp_path / 'trail'}", fsync=False)
    writer = Signer(generate())
    synthesize(store, writer, streams=2, events=3)
    registry = PolicyRegistry()
    spec = parse_spec(file_spec(tmp_path / "trail"))
    registry.put(PolicyEntry("shop", "p", "u", 1, spec, "h", "2026-01-01T00:00:00Z"))
    signer = Signer(generate())
    settings = WitnessSettings(60.0, sigstore_tsa.url)
    witness = Witness(settings, registry, "c1", signer, WitnessMetrics(CollectorRegistry()))

    async def two_cycles() -> None:
        await witness.cycle()
        await witness.cycle()
        await witness.close()

    asyncio.run(two_cycles())
    tokens = [n for n in store.list("witness/c1/") if n.endswith(".tsr")]
    assert len(tokens) == 2, list(store.list("witness/"))
    chain = load_certificates(sigstore_tsa.chain_pem)
    assert len(chain) == 3
    record = tokens[0].removesuffix(".tsr")
    proved = verify_token(store.get(tokens[0]), store.get(record), chain[-1:], chain[:-1])
    assert abs(proved.gen_time - datetime.now(UTC)) < timedelta(minutes=5)
    options = VerifyOptions(
        public_keys=[writer.public], witness_keys=[signer.public], tsa_certificates=chain
    )
    report = verify(store, options)
    assert report.findings == [], [f.describe() for f in report.findings]
    assert "timestamp-missing" not in {w.code for w in report.warnings}

    tampered = bytearray(store.get(tokens[1]))
    tampered[-8] ^= 0x01  # in the SignerInfo's signature, the token's last member
    copy = sinks.open(f"file://{tmp_path / 'copy'}", fsync=False)
    for name in store.list(""):
        copy.put(name, bytes(tampered) if name == tokens[1] else store.get(name), None)
    found = {(f.code, f.object) for f in verify(copy, options).findings}
    assert found == {(TIMESTAMP_UNTRUSTED, tokens[1])}, found  # the signature fails
