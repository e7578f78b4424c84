"""Certificate records (FORMAT.md section 9, "Certificates"): the parser under hostile
input, and verify following certificates from a root key to per-pod keys."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.certificate import (
    FORMAT,
    Subject,
    decode_certificate,
    encode_certificate,
    publish_certificate,
)
from auditlock.ledger.errors import FormatError
from auditlock.ledger.keys import Signer, public_pem
from auditlock.ledger.limits import MAX_CERTIFICATE_BYTES
from auditlock.ledger.rotation import publish_rotation
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.writer import StreamWriter

from .ledger_helpers import Ledger, make_signer, new_ledger

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
STREAM = "c1_team_app-0"
SUBJECT = Subject("c1", "team", "app-0", "0f6c1f9e-1b2a-4c3d-9e8f-0123456789ab", STREAM)
ROOT = make_signer(7)
POD = make_signer(8)


def _record(**change: object) -> bytes:
    record = encode_certificate(
        ROOT, SUBJECT, POD.public, serial=0, not_before_ns=DEFAULT_START_NS,
        not_after_ns=DEFAULT_START_NS + HOUR,
    )  # fmt: skip
    if not change:
        return record
    body = orjson.loads(record.split(b"\n")[0])
    body.update(change)
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return raw + b"\n" + base64.b64encode(ROOT.sign(raw)) + b"\n"


def test_a_certificate_round_trips_and_names_its_subject() -> None:
    cert = decode_certificate(_record())
    assert cert.subject == SUBJECT and cert.key_id == POD.key_id
    assert cert.issuer_key_id == ROOT.key_id and cert.serial == 0
    assert cert.valid_at(DEFAULT_START_NS) and cert.valid_at(DEFAULT_START_NS + HOUR)
    assert not cert.valid_at(DEFAULT_START_NS + HOUR + 1)
    cert.verify_with(ROOT.public)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"format": "auditlock/certificate/v2"}, "unknown certificate format"),
        ({"extra": "x"}, "members differ"),
        ({"serial": "0"}, "serial"),
        ({"serial": -1}, "serial"),
        ({"pod": 5}, "strings"),
        ({"pod": "App_0"}, "pod is not of the form"),
        ({"stream": "a/b"}, "stream is not of the form"),
        ({"key_id": "0" * 64}, "does not match its key_id"),
        ({"public_key": "AAAA"}, "malformed"),
        ({"not_before": "2026-01-01T00:00:00Z"}, "malformed"),
        ({"not_after": "2025-01-01T00:00:00.000000000Z"}, "not_before is after"),
    ],
)
def test_a_malformed_certificate_is_refused_with_its_reason(
    change: dict[str, object], reason: str
) -> None:
    with pytest.raises(FormatError, match=reason):
        decode_certificate(_record(**change))


def test_a_certificate_has_one_stored_form() -> None:
    body, signature, _ = _record().split(b"\n")
    spaced = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).replace(b"\n", b"")
    with pytest.raises(FormatError, match="canonical"):
        decode_certificate(spaced + b"\n" + signature + b"\n")
    with pytest.raises(FormatError, match="two newline-terminated lines"):
        decode_certificate(body + b"\n" + signature)
    with pytest.raises(FormatError, match="more than"):
        decode_certificate(b" " * (MAX_CERTIFICATE_BYTES + 1))


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.builds(
            lambda cut, junk: _record()[:cut] + junk, st.integers(0, 700), st.binary(max_size=8)
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=12), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: orjson.dumps(v) + b"\n" + b"A" * 86 + b"==\n"),
    )
)
def test_the_parser_refuses_any_other_bytes_with_a_format_error(data: bytes) -> None:
    try:
        cert = decode_certificate(data)
    except FormatError:
        return
    assert data == _record() and cert.key_id == POD.key_id


# --- verify follows certificates ------------------------------------------------------


def _store(tmp_path: Path, root: Signer = ROOT) -> Ledger:
    ledger = new_ledger(tmp_path, root)  # --public-key is the root's
    return ledger


def _write(
    ledger: Ledger, signer: Signer, *, start_ns: int = DEFAULT_START_NS, n: int = 3,
    close: bool = True, stream: str = STREAM,
) -> None:  # fmt: skip
    clock = SimulatedClock(start_ns)
    writer = StreamWriter.resume(ledger.dest, stream, signer, retention=None, clock=clock)
    for _, event in synthetic_events("x", n, interval_ns=SECOND, start_ns=start_ns):
        writer.append(event)
    writer.store(writer.seal())
    if close:
        writer.store(writer.close())


def _certify(
    ledger: Ledger, key: Signer, *, issuer: Signer = ROOT, subject: Subject = SUBJECT,
    not_before_ns: int = DEFAULT_START_NS - 60 * SECOND, hours: int = 1,
) -> str:  # fmt: skip
    name, _ = publish_certificate(
        ledger.dest, issuer, subject, key.public, not_before_ns=not_before_ns,
        not_after_ns=not_before_ns + hours * HOUR, retention=None,
    )  # fmt: skip
    return name


def _codes(ledger: Ledger, *keys: Signer) -> list[str]:
    options = VerifyOptions(public_keys=[k.public for k in keys], now_ns=DEFAULT_START_NS + HOUR)
    report = verify(ledger.dest, options)
    return [f.code for f in report.findings]


def test_a_certified_pod_key_is_trusted_under_the_root(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    assert _certify(ledger, POD) == f"keys/certs/{POD.key_id}-000000.json"
    _write(ledger, POD)
    assert _codes(ledger, ROOT) == []
    code, out = ledger.verify()
    assert code == 0 and "per-pod keys it certifies" in out


def test_a_restart_in_the_same_pod_with_a_new_certified_key_continues(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    _certify(ledger, POD)
    _write(ledger, POD, close=False)  # crashed: the next start resumes the epoch
    again = make_signer()
    _certify(ledger, again)
    _write(ledger, again, start_ns=DEFAULT_START_NS + 10 * SECOND)
    assert _codes(ledger, ROOT) == []
    assert _codes(ledger) == []  # without --public-key: the first certificate's issuer


def test_a_foreign_key_is_uncertified(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    _certify(ledger, POD, subject=Subject("c1", "team", "other", "u1", "c1_team_other"))
    _write(ledger, POD, stream="c1_team_other")
    _write(ledger, make_signer())  # a key nobody certified signs STREAM
    assert set(_codes(ledger, ROOT)) == {"uncertified-key"}
    in_workers = verify(ledger.dest, VerifyOptions(public_keys=[ROOT.public], jobs=2))
    assert {f.code for f in in_workers.findings} == {"uncertified-key"}


@pytest.mark.parametrize(
    ("certify", "why"),
    [
        ({"subject": Subject("c1", "team", "app-1", "u", "c1_team_app-1")}, "is for stream"),
        ({"not_before_ns": DEFAULT_START_NS - 2 * HOUR}, "is valid from"),  # expired
        ({"not_before_ns": DEFAULT_START_NS + HOUR}, "is valid from"),  # not yet valid
        ({"issuer": make_signer(9)}, "untrusted key"),
    ],
)
def test_a_certificate_that_does_not_cover_the_checkpoint_is_uncertified(
    tmp_path: Path, certify: dict[str, object], why: str
) -> None:
    ledger = _store(tmp_path)
    other = make_signer()
    _certify(ledger, other, subject=Subject("c1", "team", "o", "u", "c1_team_o"))
    _write(ledger, other, stream="c1_team_o")  # the root does certify keys here
    _certify(ledger, POD, **certify)  # type: ignore[arg-type]
    _write(ledger, POD)
    report = verify(ledger.dest, VerifyOptions(public_keys=[ROOT.public]))
    found = [f for f in report.findings if f.stream == STREAM]
    assert {f.code for f in found} == {"uncertified-key"}
    assert why in found[0].message


def test_a_forged_or_misnamed_certificate_is_a_finding(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    name = _certify(ledger, POD)
    _write(ledger, POD)
    body = ledger.read(name).split(b"\n")[0]
    forged = body + b"\n" + base64.b64encode(make_signer().sign(body)) + b"\n"
    ledger.write(name, forged)
    ledger.write(name.replace("-000000", "-000001"), _record())
    codes = _codes(ledger, ROOT)
    assert "certificate-bad-signature" in codes and "certificate-mismatch" in codes
    assert "unknown-key" in codes  # no certificate from the root is left in the store


def test_a_certificate_from_an_unknown_issuer_is_unverifiable(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    stranger = make_signer()
    record = encode_certificate(
        stranger, SUBJECT, POD.public, serial=0, not_before_ns=0, not_after_ns=1
    )
    ledger.write(f"keys/certs/{POD.key_id}-000000.json", record)
    assert "certificate-unverifiable" in _codes(ledger, ROOT)


def test_a_rotated_root_certifies_as_the_root(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    new_root = make_signer()
    publish_rotation(ledger.dest, ROOT, new_root.public, retention=None, time_ns=DEFAULT_START_NS)
    _certify(ledger, POD, issuer=new_root)
    _write(ledger, POD)
    assert _codes(ledger, ROOT) == []


def test_a_shared_policy_key_store_verifies_as_before(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    _write(ledger, ROOT)  # the policy key signs, no certificate anywhere
    _write(ledger, make_signer(), stream="c1_team_x")
    assert _codes(ledger, ROOT) == ["unknown-key"] * 3


def test_two_issuers_racing_for_a_serial_both_store_a_certificate(tmp_path: Path) -> None:
    ledger = _store(tmp_path)
    first = _certify(ledger, POD)
    second = _certify(ledger, POD, hours=2)
    assert (first[-11:], second[-11:]) == ("000000.json", "000001.json")
    assert ledger.read(f"keys/{ROOT.key_id}.pub") == public_pem(ROOT.public)
    assert FORMAT.endswith("/v1")


def test_a_proof_checks_against_the_root_that_certified_its_key(tmp_path: Path) -> None:
    from auditlock.ledger.errors import ProofError
    from auditlock.ledger.proof import build_proof, check_proof

    ledger = _store(tmp_path)
    _certify(ledger, POD)
    _write(ledger, POD)
    event_id = next(iter(synthetic_events("x", 1, interval_ns=SECOND)))[1]["id"]
    proof = build_proof(ledger.dest, event_id)
    assert len(proof["certificates"]) == 1
    assert check_proof(proof, ROOT.public)["id"] == event_id
    with pytest.raises(ProofError, match="nor by a key it certified"):
        check_proof(proof, make_signer(9).public)
    proof["certificates"] = [_record(stream="c1_team_other")]  # another stream's
    with pytest.raises(ProofError, match="nor by a key it certified"):
        check_proof(proof, ROOT.public)


def test_the_verifier_written_from_format_md_follows_certificates(tmp_path: Path) -> None:
    from tests.helpers.spec_verifier import spec_verify

    ledger = _store(tmp_path)
    _certify(ledger, POD)
    _write(ledger, POD, close=False)
    again = make_signer()
    _certify(ledger, again)
    _write(ledger, again, start_ns=DEFAULT_START_NS + 10 * SECOND)
    assert spec_verify(ledger.root, ROOT.public) == {STREAM: 6}
    _write(ledger, make_signer(), stream="c1_team_x")
    with pytest.raises(AssertionError, match="no certificate from the root"):
        spec_verify(ledger.root, ROOT.public)


def test_the_root_that_certified_a_pod_key_closes_its_abandoned_stream(tmp_path: Path) -> None:
    from auditlock.ledger.abandon import abandon_stream

    ledger = _store(tmp_path)
    _certify(ledger, POD)
    _write(ledger, POD, close=False)  # the pod died; its key died with it
    later = DEFAULT_START_NS + 600 * SECOND
    stranger = abandon_stream(ledger.dest, STREAM, make_signer(), now_ns=later, retention=None)
    assert stranger.outcome == "foreign-key"
    done = abandon_stream(ledger.dest, STREAM, ROOT, now_ns=later, retention=None)
    assert done.outcome == "abandoned", done.message
    for keys in ([ROOT.public], []):  # anchored, and trust on first use
        report = verify(ledger.dest, VerifyOptions(public_keys=keys, now_ns=later + HOUR))
        assert report.findings == [] and report.streams[0].state == "closed-abandoned"


def test_the_example_certificate_in_format_md_is_what_the_writer_makes() -> None:
    """FORMAT.md section 9's example, regenerated byte for byte and checked with the
    cryptography package alone, as a third party would."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from auditlock.ledger.timestamps import parse_ns

    root = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    pod = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))))
    uid, stream = "0f6c1f9e-1b2a-4c3d-9e8f-0123456789ab", "prod-eu1_payments_api-7f9c-abcde"
    subject = Subject("prod-eu1", "payments", "api-7f9c-abcde", uid, stream)
    record = encode_certificate(
        root, subject, pod.public, serial=0,
        not_before_ns=parse_ns("2026-01-01T00:00:00.000000000Z"),
        not_after_ns=parse_ns("2026-01-02T00:05:00.000000000Z"),
    )  # fmt: skip
    spec = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    body, signature, _ = record.split(b"\n")
    assert f"  {body.decode()}\n  {signature.decode()}\n" in spec
    assert f"keys/certs/{pod.key_id}-000000.json" in spec
    root.public.verify(base64.b64decode(signature), body)
