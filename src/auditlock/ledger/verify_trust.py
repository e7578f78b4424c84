"""Step 2: load the keys, rotation records and certificates; build the trusted key sets
(docs/FORMAT.md 11.2 and section 9).

Codes: `key-corrupt`, `key-mismatch`, `object-unreadable` (keys); `rotation-corrupt`,
`rotation-mismatch`, `rotation-unverifiable`, `rotation-bad-signature` (rotations);
`certificate-corrupt`, `certificate-mismatch`, `certificate-unverifiable`,
`certificate-bad-signature` (certificates). Whether a certificate covers a checkpoint is
judged per checkpoint in step 3.1 (`StreamTrust`, `uncertified-key`).
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from auditlock.ledger.certificate import Certificate, decode_certificate
from auditlock.ledger.errors import FormatError, KeyFileError, SignatureError
from auditlock.ledger.keys import key_id, load_public_key, public_pem
from auditlock.ledger.limits import MAX_CERTIFICATE_BYTES, MAX_KEY_BYTES, MAX_ROTATION_BYTES
from auditlock.ledger.names import ObjectName
from auditlock.ledger.report import Finding
from auditlock.ledger.rotation import decode_rotation
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify_findings import Place
from auditlock.sinks.base import DestinationError, ObjectNotFound, ObjectUnreadable

Read = Callable[[str, int], bytes]


@dataclass(frozen=True)
class StreamTrust:
    """What may sign one stream's checkpoints: `keys` directly, and any key a certificate
    issued by one of `issuers` covers (FORMAT.md section 9, "Trust")."""

    keys: set[str]
    issuers: set[str]


@dataclass
class Trust:
    """The keys a checkpoint may be signed by (FORMAT.md section 9, "Trust")."""

    public: dict[str, Ed25519PublicKey] = field(default_factory=dict)  # id -> usable key
    rotations: dict[str, set[str]] = field(default_factory=dict)  # old id -> new ids
    anchors: set[str] = field(default_factory=set)  # ids of the --public-key keys
    stored: set[str] = field(default_factory=set)  # ids of the keys/<id>.pub listed
    # key id -> the certificates for it whose issuer's signature verified
    certificates: dict[str, list[Certificate]] = field(default_factory=dict)
    issuers: set[str] = field(default_factory=set)  # issuers of those certificates

    def reachable(self, start: set[str]) -> set[str]:
        """`start` and every key a chain of valid rotation records leads to from it."""
        seen = set(start)
        queue = deque(start)
        while queue:
            for nxt in self.rotations.get(queue.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    def anchored(self) -> StreamTrust | None:
        """The trust of every stream; None: each stream's first checkpoint decides."""
        if not self.anchors:
            return None
        roots = self.reachable(self.anchors)
        return StreamTrust(keys=roots, issuers=roots)

    def first_seen(self, stream: str, key: str, time_ns: int) -> StreamTrust:
        """Without --public-key: the stream's first key and the keys rotations reach from
        it; if a certificate covers that first checkpoint, its issuer (and the keys
        rotations reach from it) and the keys they certify for the stream too."""
        cert = self.covering(stream, key, time_ns, issuers=None)
        issuers = self.reachable({cert.issuer_key_id}) if cert is not None else set()
        # The issuer may sign too: the operator closes an abandoned per-pod stream.
        return StreamTrust(keys=self.reachable({key}) | issuers, issuers=issuers)

    def covering(
        self, stream: str, key: str, time_ns: int, issuers: set[str] | None
    ) -> Certificate | None:
        """A certificate from one of `issuers` (None: any) for `key` on `stream`, valid at
        `time_ns`."""
        for cert in self.certificates.get(key, ()):
            if (
                (issuers is None or cert.issuer_key_id in issuers)
                and cert.subject.stream == stream
                and cert.valid_at(time_ns)
            ):
                return cert
        return None

    def why_uncovered(self, stream: str, key: str, time_ns: int, issuers: set[str]) -> str:
        """Why no certificate covers this use of `key`, for the finding's message."""
        certs = self.certificates.get(key, [])
        if not certs:
            return "no certificate names it"
        reasons = []
        for cert in certs:
            name = f"certificate {cert.serial}"
            if cert.issuer_key_id not in issuers:
                reasons.append(f"{name} is issued by untrusted key {cert.issuer_key_id[:16]}…")
            elif cert.subject.stream != stream:
                reasons.append(f"{name} is for stream {cert.subject.stream}")
            else:
                reasons.append(
                    f"{name} is valid from {format_ns(cert.not_before_ns)} "
                    f"to {format_ns(cert.not_after_ns)}"
                )
        return "; ".join(reasons)

    def describe(self) -> str:
        if self.anchors:
            text = "anchored to --public-key " + ", ".join(sorted(k[:16] for k in self.anchors))
            if self.issuers & self.reachable(self.anchors):
                text += " (and the per-pod keys it certifies)"
            return text
        return (
            "no --public-key given: each stream's first key and its signed rotations, "
            "as stored beside the data (someone able to rewrite the whole store could "
            "forge them; pass --public-key to anchor trust)"
        )

    # Keys travel to `verify --jobs` worker processes as their raw bytes, certificates as
    # their records (already verified; decoding them again is pure parsing).
    def __getstate__(self) -> dict[str, Any]:
        raw = {k: v.public_bytes(Encoding.Raw, PublicFormat.Raw) for k, v in self.public.items()}
        certs = {
            k: [c.body + b"\n" + base64.b64encode(c.signature) + b"\n" for c in v]
            for k, v in self.certificates.items()
        }
        return {**self.__dict__, "public": raw, "certificates": certs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        public = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in state["public"].items()}
        certs = {k: [decode_certificate(r) for r in v] for k, v in state["certificates"].items()}
        self.__dict__.update({**state, "public": public, "certificates": certs})


def load_trust(
    anchors: list[Ed25519PublicKey],
    keys: list[ObjectName],
    rotations: list[ObjectName],
    certificates: list[ObjectName],
    read: Read,
    guard: Callable[..., Any],
    add: Callable[[list[Finding]], None],
) -> Trust:
    """The trust of this store: the --public-key keys, the stored keys that load
    (`load_key`), the rotations that verify (`load_rotation`), and the certificates whose
    issuer's signature verifies (`load_certificate`)."""
    trust = Trust(anchors={key_id(k) for k in anchors}, stored={k.key_id for k in keys})
    for pub in anchors:
        trust.public[key_id(pub)] = pub
    for obj in keys:
        with guard(object=obj.name):
            loaded, found = load_key(obj, read)
            add(found)
            if loaded is not None:
                trust.public[obj.key_id] = loaded
    for obj in rotations:
        with guard(object=obj.name):
            add(load_rotation(obj, read, trust))
    for obj in certificates:
        with guard(object=obj.name):
            add(load_certificate(obj, read, trust))
    return trust


def _read_record(
    obj: ObjectName, read: Read, max_bytes: int, decode: Callable[[bytes], Any], corrupt: str
) -> tuple[Any, list[Finding]]:
    """The object decoded; else `corrupt` (it does not decode, or is gone) or
    `object-unreadable` (the read failed)."""
    try:
        return decode(read(obj.name, max_bytes)), []
    except (FormatError, KeyFileError, ObjectNotFound, ObjectUnreadable) as exc:
        return None, [Place().find(corrupt, str(exc), object=obj.name)]
    except DestinationError as exc:
        return None, [Place().find("object-unreadable", str(exc), object=obj.name)]


def _stored_key(data: bytes) -> Ed25519PublicKey:
    pub = load_public_key(data)
    if public_pem(pub) != data:  # one stored form: PEM parsers skip text around it
        raise KeyFileError("not exactly the PEM SubjectPublicKeyInfo of its key")
    return pub


def load_key(obj: ObjectName, read: Read) -> tuple[Ed25519PublicKey | None, list[Finding]]:
    """A stored public key. `key-corrupt` (not exactly the PEM of one key),
    `key-mismatch` (its id is not its name), `object-unreadable`."""
    pub, found = _read_record(obj, read, MAX_KEY_BYTES, _stored_key, "key-corrupt")
    if pub is not None and key_id(pub) != obj.key_id:
        return None, [
            Place().find(
                "key-mismatch",
                f"holds key {key_id(pub)[:16]}…, not the key its name says",
                object=obj.name,
            )
        ]
    return pub, found


def load_rotation(obj: ObjectName, read: Read, trust: Trust) -> list[Finding]:
    """A rotation record; on success its new key joins `trust`. `rotation-corrupt`,
    `rotation-mismatch`, `rotation-unverifiable` (old key not stored),
    `rotation-bad-signature`, `object-unreadable`."""
    here = Place()
    record, found = _read_record(obj, read, MAX_ROTATION_BYTES, decode_rotation, "rotation-corrupt")
    if record is None:
        return found
    if not record.named_by(obj):
        return [
            here.find("rotation-mismatch", "record names other keys than its name", object=obj.name)
        ]
    old = trust.public.get(record.old_key_id)
    if old is None:
        return [here.find("rotation-unverifiable", "the old key is not stored", object=obj.name)]
    try:
        record.verify_with(old)
    except SignatureError as exc:
        return [here.find("rotation-bad-signature", str(exc), object=obj.name)]
    trust.public.setdefault(record.new_key_id, record.new_public)
    trust.rotations.setdefault(record.old_key_id, set()).add(record.new_key_id)
    return []


def load_certificate(obj: ObjectName, read: Read, trust: Trust) -> list[Finding]:
    """A certificate record; on success it joins `trust` (which streams and times it
    covers is judged per checkpoint). `certificate-corrupt`, `certificate-mismatch` (the
    record names another key or serial than its object name), `certificate-unverifiable`
    (the issuer's key is neither given nor stored), `certificate-bad-signature`,
    `object-unreadable`."""
    here = Place()
    cert, found = _read_record(
        obj, read, MAX_CERTIFICATE_BYTES, decode_certificate, "certificate-corrupt"
    )
    if cert is None:
        return found
    if not cert.named_by(obj):
        return [
            here.find(
                "certificate-mismatch",
                "record names another key or serial than its name",
                object=obj.name,
            )
        ]
    issuer = trust.public.get(cert.issuer_key_id)
    if issuer is None:
        return [
            here.find(
                "certificate-unverifiable",
                f"the issuer key {cert.issuer_key_id[:16]}… is neither given nor stored",
                object=obj.name,
            )
        ]
    try:
        cert.verify_with(issuer)
    except SignatureError as exc:
        return [here.find("certificate-bad-signature", str(exc), object=obj.name)]
    trust.certificates.setdefault(cert.key_id, []).append(cert)
    trust.issuers.add(cert.issuer_key_id)
    return []
