"""Trusted time: RFC 3161 timestamp tokens over ledger records (FORMAT.md, "Timestamp tokens").

A record's own `time` is its writer's claim. A time-stamping authority (TSA) that the
writer does not control signs "these bytes existed at gen_time", so nobody (the operator
included) can later produce a record that claims an earlier time than the token shows.

What is stored is the TSA's whole `TimeStampResp` (DER), the form `openssl ts -verify -in`
reads, so an auditor can check a token with openssl alone:

    openssl ts -verify -data RECORD -in RECORD.tsr -CAfile tsa-roots.pem

The message imprint is SHA-256 over the record's exact stored bytes.

Requesting a token is I/O; checking one is CPU only and needs the TSA's root certificates
(and intermediates the TSA does not embed), never the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

# id-sha256: the only imprint algorithm a stored token may use (FORMAT.md).
SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
# A TimeStampResp is a few KiB (a signature, the TSA's chain). Anything far larger is not
# one, and a hostile or broken TSA must not make the operator buffer it.
MAX_RESPONSE_BYTES = 256 * 1024
REQUEST_CONTENT_TYPE = "application/timestamp-query"
RESPONSE_CONTENT_TYPE = "application/timestamp-reply"

# Finding codes (FORMAT.md, "Timestamp tokens").
TIMESTAMP_INVALID = "timestamp-invalid"  # not a granted TimeStampResp, or its signature fails
TIMESTAMP_MISMATCH = "timestamp-mismatch"  # a valid token, but over other bytes
TIMESTAMP_UNTRUSTED = "timestamp-untrusted"  # signed by a TSA outside the given roots


class TimestampError(Exception):
    """A token that cannot be used; `code` is its FORMAT.md finding code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class TrustedTime:
    """What a valid token proves about one record."""

    gen_time: datetime  # when the TSA saw the imprint (UTC)
    serial_number: int  # the TSA's serial for this token
    tsa: str  # the signing certificate's subject, RFC 4514
    imprint: bytes  # SHA-256 of the record's bytes


@dataclass(frozen=True, slots=True)
class TimestampRequest:
    """A request ready to send, with the nonce its answer must carry."""

    der: bytes
    nonce: int | None
    imprint: bytes


def build_request(message: bytes) -> TimestampRequest:
    """A TimeStampReq over SHA-256(message), with a random nonce and the TSA's
    certificate requested (so the stored token carries the chain it was signed with)."""
    if not message:
        raise ValueError("an empty record cannot be timestamped")
    request = (
        TimestampRequestBuilder()
        .data(message)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    return TimestampRequest(request.as_bytes(), request.nonce, hashlib.sha256(message).digest())


async def request_token(
    session: aiohttp.ClientSession,
    url: str,
    message: bytes,
    *,
    time_limit: float = 10.0,
) -> bytes:
    """Ask the TSA at `url` to timestamp `message`; the DER TimeStampResp to store.

    The answer is checked against the request (granted, same imprint, same nonce) before
    it is returned, so a TSA that answers for other bytes is caught at once rather than
    by an auditor a year later. Raises TimestampError or aiohttp.ClientError/TimeoutError.
    """
    request = build_request(message)
    async with session.post(
        url,
        data=request.der,
        headers={"Content-Type": REQUEST_CONTENT_TYPE, "Accept": RESPONSE_CONTENT_TYPE},
        timeout=aiohttp.ClientTimeout(total=time_limit),
    ) as response:
        if response.status != 200:
            raise TimestampError(TIMESTAMP_INVALID, f"TSA {url} answered HTTP {response.status}")
        body = await _read_bounded(response, MAX_RESPONSE_BYTES)
    parsed = _decode(body)
    _check_granted(parsed)
    _check_imprint(parsed, request.imprint)
    if request.nonce is not None and parsed.tst_info.nonce != request.nonce:
        raise TimestampError(TIMESTAMP_INVALID, f"TSA {url} answered with another nonce")
    return body


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise TimestampError(
                TIMESTAMP_INVALID, f"TSA answer is larger than {limit} bytes; not a token"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def verify_token(
    token: bytes,
    message: bytes,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
) -> TrustedTime:
    """Check a stored token against the record's bytes and the TSA roots an auditor trusts.

    The steps, in FORMAT.md's order: it is a granted TimeStampResp; its imprint is
    SHA-256 and equals SHA-256(message); its signature verifies under a chain to one of
    `roots`, valid at gen_time, whose signing certificate has the critical
    id-kp-timeStamping extended key usage.
    """
    if not roots:
        raise ValueError("verify_token needs at least one TSA root certificate")
    parsed = _decode(token)
    _check_granted(parsed)
    imprint = hashlib.sha256(message).digest()
    _check_imprint(parsed, imprint)
    builder = VerifierBuilder()
    for root in roots:
        builder = builder.add_root_certificate(root)
    for intermediate in intermediates:
        builder = builder.add_intermediate_certificate(intermediate)
    try:
        builder.build().verify(parsed, imprint)
        signer = _signer_subject(parsed)
    except VerificationError as err:
        raise TimestampError(TIMESTAMP_UNTRUSTED, f"timestamp signature: {err}") from None
    except Exception as err:  # malformed DER met only by the signature check
        raise TimestampError(TIMESTAMP_INVALID, f"not a TimeStampResp: {err}") from None
    info = parsed.tst_info
    # GeneralizedTime in a token is UTC (RFC 3161 §2.4.2); the decoder may leave it naive.
    gen_time = info.gen_time
    gen_time = gen_time.astimezone(UTC) if gen_time.tzinfo else gen_time.replace(tzinfo=UTC)
    return TrustedTime(
        gen_time=gen_time,
        serial_number=info.serial_number,
        tsa=signer,
        imprint=imprint,
    )


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (a TSA's roots or chain); ValueError if none."""
    certificates = x509.load_pem_x509_certificates(pem)
    if not certificates:
        raise ValueError("no certificate in the PEM bundle")
    return certificates


def _decode(token: bytes) -> TimeStampResponse:
    if len(token) > MAX_RESPONSE_BYTES:
        raise TimestampError(TIMESTAMP_INVALID, f"token is larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        parsed = decode_timestamp_response(token)
        # The decoder parses the token's inner structures lazily: touch each part used
        # later so malformed DER fails here, as one finding, not deep in a check.
        if parsed.status in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
            _ = parsed.tst_info.message_imprint.message, parsed.tst_info.gen_time
            _ = parsed.signed_data.signer_infos, parsed.signed_data.certificates
    except Exception as err:  # the Rust decoder raises its own types for malformed DER
        raise TimestampError(TIMESTAMP_INVALID, f"not a TimeStampResp: {err}") from None
    return parsed


def _check_granted(parsed: TimeStampResponse) -> None:
    if parsed.status not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        detail = "; ".join(parsed.status_string) or "no reason given"
        raise TimestampError(
            TIMESTAMP_INVALID, f"TSA did not grant the timestamp (status {parsed.status}: {detail})"
        )


def _check_imprint(parsed: TimeStampResponse, imprint: bytes) -> None:
    stated = parsed.tst_info.message_imprint
    if stated.hash_algorithm != SHA256_OID:
        raise TimestampError(
            TIMESTAMP_INVALID,
            f"imprint algorithm {stated.hash_algorithm.dotted_string} is not SHA-256",
        )
    if stated.message != imprint:
        raise TimestampError(
            TIMESTAMP_MISMATCH,
            f"token is over {stated.message.hex()[:16]}…, "
            f"the record hashes to {imprint.hex()[:16]}…",
        )


def _signer_subject(parsed: TimeStampResponse) -> str:
    signer = next(iter(parsed.signed_data.signer_infos))
    for der in parsed.signed_data.certificates:
        certificate = x509.load_der_x509_certificate(der)
        same_serial = certificate.serial_number == signer.serial_number
        if same_serial and certificate.issuer == signer.issuer:
            return certificate.subject.rfc4514_string()
    return signer.issuer.rfc4514_string()


__all__ = [
    "MAX_RESPONSE_BYTES",
    "TIMESTAMP_INVALID",
    "TIMESTAMP_MISMATCH",
    "TIMESTAMP_UNTRUSTED",
    "TimestampError",
    "TimestampRequest",
    "TrustedTime",
    "build_request",
    "load_certificates",
    "request_token",
    "verify_token",
]
