"""Certificate records: a root key vouches for one pod's signing key (docs/FORMAT.md,
"Certificates").

    <body: RFC 8785 JSON {format, cluster, namespace, pod, pod_uid, stream, key_id,
           public_key, serial, not_before, not_after, issuer_key_id}>\\n
    <base64 Ed25519 signature by the ISSUER key over the body bytes>\\n

Stored at keys/certs/<key-id>-<serial:6>.json. The parser is written for hostile input:
the size is capped before parsing, the JSON parser has a depth limit and never recurses
in Python, and every member has one accepted form, so a record has one stored form.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.errors import FormatError, KeyFileError
from auditlock.ledger.keys import Signer, key_id, public_pem
from auditlock.ledger.limits import MAX_CERTIFICATE_BYTES
from auditlock.ledger.names import STREAM_PATTERN, ObjectName, certificate_name, key_name
from auditlock.ledger.signed_record import (
    SignedRecord,
    decode_public_key,
    encode_public_key,
    open_signed_record,
    sign_record,
)
from auditlock.ledger.timestamps import format_ns, parse_ns
from auditlock.sinks.base import Destination, ObjectConflict, RetentionSpec

FORMAT = "auditlock/certificate/v1"
MAX_SERIAL = 999_999
_STRINGS = (
    "format",
    "cluster",
    "namespace",
    "pod",
    "pod_uid",
    "stream",
    "key_id",
    "public_key",
    "not_before",
    "not_after",
    "issuer_key_id",
)
_FIELDS = frozenset((*_STRINGS, "serial"))
# Kubernetes names (DNS subdomains at most), a UID, ids: one form each, no escaping.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
_UID = re.compile(r"[A-Za-z0-9-]{1,128}\Z")
_KEY_ID = re.compile(r"[0-9a-f]{64}\Z")
_STREAM = re.compile(STREAM_PATTERN + r"\Z")


@dataclass(frozen=True)
class Subject:
    """Who the certified key belongs to: one collector of one pod."""

    cluster: str
    namespace: str
    pod: str
    pod_uid: str
    stream: str


@dataclass(frozen=True)
class Certificate(SignedRecord):
    """Signed by the issuer key (`issuer_key_id`)."""

    subject: Subject
    key_id: str
    public: Ed25519PublicKey
    serial: int
    not_before_ns: int
    not_after_ns: int
    issuer_key_id: str

    @property
    def label(self) -> str:
        return f"certificate {self.key_id[:12]}"

    def named_by(self, name: ObjectName) -> bool:
        """Whether this is the record its object name says: its key and serial."""
        return (self.key_id, self.serial) == (name.key_id, name.index)

    def valid_at(self, time_ns: int) -> bool:
        """Both bounds inclusive (FORMAT.md section 9, "Certificates")."""
        return self.not_before_ns <= time_ns <= self.not_after_ns


def encode_certificate(
    issuer: Signer,
    subject: Subject,
    public: Ed25519PublicKey,
    *,
    serial: int,
    not_before_ns: int,
    not_after_ns: int,
) -> bytes:
    """The record's bytes; ValueError if a member would make a record no reader accepts."""
    body = canonical_bytes(
        {
            "format": FORMAT,
            "cluster": subject.cluster,
            "namespace": subject.namespace,
            "pod": subject.pod,
            "pod_uid": subject.pod_uid,
            "stream": subject.stream,
            "key_id": key_id(public),
            "public_key": encode_public_key(public),
            "serial": serial,
            "not_before": format_ns(not_before_ns),
            "not_after": format_ns(not_after_ns),
            "issuer_key_id": issuer.key_id,
        }
    )
    record = sign_record(issuer, body)
    try:
        decode_certificate(record)
    except FormatError as exc:
        raise ValueError(str(exc)) from None
    return record


def decode_certificate(data: bytes) -> Certificate:
    """Parse a certificate record; FormatError naming the first problem."""
    raw, body, signature = open_signed_record(
        data, "certificate", max_bytes=MAX_CERTIFICATE_BYTES, format=FORMAT, fields=_FIELDS
    )
    if not all(isinstance(raw[k], str) for k in _STRINGS):
        raise FormatError("certificate members other than serial must be strings")
    serial = raw["serial"]
    if type(serial) is not int or not 0 <= serial <= MAX_SERIAL:
        raise FormatError(f"certificate serial must be an integer 0..{MAX_SERIAL}")
    if canonical_bytes(raw) != body:
        raise FormatError("certificate body is not in canonical (RFC 8785) form")
    _check_form(raw)
    try:
        not_before, not_after = parse_ns(raw["not_before"]), parse_ns(raw["not_after"])
        public = decode_public_key(raw["public_key"], "public_key")
    except (ValueError, binascii.Error, KeyFileError) as exc:
        raise FormatError(f"certificate is malformed ({exc})") from None
    if key_id(public) != raw["key_id"]:
        raise FormatError("certificate's public_key does not match its key_id")
    if not_before > not_after:
        raise FormatError("certificate's not_before is after its not_after")
    return Certificate(
        subject=Subject(
            raw["cluster"], raw["namespace"], raw["pod"], raw["pod_uid"], raw["stream"]
        ),
        key_id=raw["key_id"],
        public=public,
        serial=serial,
        not_before_ns=not_before,
        not_after_ns=not_after,
        issuer_key_id=raw["issuer_key_id"],
        body=body,
        signature=signature,
    )


def _check_form(raw: dict[str, str]) -> None:
    for member, pattern in (
        ("cluster", _NAME),
        ("namespace", _NAME),
        ("pod", _NAME),
        ("pod_uid", _UID),
        ("stream", _STREAM),
        ("key_id", _KEY_ID),
        ("issuer_key_id", _KEY_ID),
    ):
        if not pattern.match(raw[member]):
            raise FormatError(f"certificate member {member} is not of the form FORMAT.md gives")


def publish_certificate(
    destination: Destination,
    issuer: Signer,
    subject: Subject,
    public: Ed25519PublicKey,
    *,
    not_before_ns: int,
    not_after_ns: int,
    retention: RetentionSpec | None,
    store_issuer_key: bool = True,
) -> tuple[str, bytes]:
    """Store the issuer's public key and a new certificate under the lowest free serial
    for this key; return its name and bytes. Serials are taken by trying to store, not by
    listing (a new key, the common case, has none yet: one write): the store refuses a
    different object under an existing name, so a taken serial, or one a racing issuer
    just took, moves on to the next. `store_issuer_key=False` skips storing the issuer's
    public key (the caller knows this destination has it)."""
    if store_issuer_key:
        destination.put(key_name(issuer.key_id), public_pem(issuer.public), retention)
    serial = 0
    while True:
        record = encode_certificate(
            issuer,
            subject,
            public,
            serial=serial,
            not_before_ns=not_before_ns,
            not_after_ns=not_after_ns,
        )
        name = certificate_name(key_id(public), serial)
        try:
            destination.put(name, record, retention)
        except ObjectConflict:
            if serial >= MAX_SERIAL:
                raise
            serial += 1
            continue
        return name, record
