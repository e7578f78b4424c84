"""`auditlock verify-evidence`: check an evidence package offline with a public key.

The steps, in order; each failure is a finding with a code (docs/review.md lists them):

1. the archive: a .tar.gz of regular files with plain names, within the limits
   (archive.py: archive-corrupt, archive-too-large, member-unsafe, member-duplicate);
2. the manifest: present and well-formed (manifest-missing, manifest-corrupt); every
   member it lists is there with its SHA-256 and size (member-missing, digest-mismatch),
   and nothing else is (member-unlisted);
3. the keys: the given public keys, every key a valid rotation record in the package
   leads to from them (key-mismatch, rotation-invalid), and the per-pod keys they
   certify (certificate-invalid; FORMAT.md section 9);
4. the checkpoints: each signed by a trusted key (untrusted-key, bad-signature), named
   as its body says (checkpoint-corrupt, checkpoint-misplaced), consecutive ones chained
   by `prev` (checkpoint-chain-broken);
5. the sample: every key recomputed from the seed, in increasing order, as many events as
   asked for or the whole population (sample-mismatch), each inside the period
   (sample-outside-period); every proof made against a checkpoint of the package, byte for
   byte (proof-checkpoint-mismatch), and valid (proof-invalid: FORMAT.md section 12);
6. the verification the package records passed (trail-failed).

A member that fails its digest is not read further: the finding says it was changed.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.evidence import layout
from auditlock.evidence.archive import Limits, read_archive
from auditlock.evidence.errors import EvidenceError
from auditlock.evidence.sample import ALGORITHM, sample_key
from auditlock.ledger.certificate import Certificate, decode_certificate
from auditlock.ledger.checkpoint import SignedCheckpoint, body_digest, decode_checkpoint
from auditlock.ledger.errors import FormatError, KeyFileError, ProofError, SignatureError
from auditlock.ledger.keys import key_id, load_public_key, public_pem, verify
from auditlock.ledger.names import ObjectName, parse_name
from auditlock.ledger.proof import check_proof
from auditlock.ledger.rotation import Rotation, decode_rotation
from auditlock.ledger.timestamps import parse_ns

_Record = TypeVar("_Record", Rotation, Certificate)


def _ledger_name(member: str) -> ObjectName | None:
    """What the name of a member under the package's ledger says (None: no ledger object)."""
    return parse_name(member[len(layout.LEDGER) :]) if member.startswith(layout.LEDGER) else None


@dataclass
class Finding:
    code: str
    message: str
    member: str | None = None


@dataclass
class EvidenceReport:
    path: str
    findings: list[Finding] = field(default_factory=list)
    manifest_sha256: str | None = None
    source: str | None = None
    members: int = 0
    checkpoints: int = 0
    sampled: int = 0
    trusted_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "result": "PASS" if self.ok else "FAIL",
            "manifest_sha256": self.manifest_sha256,
            "source": self.source,
            "members": self.members,
            "checkpoints": self.checkpoints,
            "sampled": self.sampled,
            "trusted_keys": self.trusted_keys,
            "findings": [f.__dict__ for f in self.findings],
        }


def check_evidence(
    path: Path, public_keys: list[Ed25519PublicKey], limits: Limits | None = None
) -> EvidenceReport:
    """Every step of the module docstring; never raises for bad input."""
    report = EvidenceReport(str(path))
    try:
        members = read_archive(path, limits)
    except EvidenceError as exc:
        report.findings.append(Finding(exc.code, exc.message))
        return report
    _Checker(report, members, public_keys).run()
    return report


class _Checker:
    def __init__(
        self, report: EvidenceReport, members: dict[str, bytes], keys: list[Ed25519PublicKey]
    ) -> None:
        self.report = report
        self.members = members
        self.intact: dict[str, bytes] = {}  # members whose digest matches the manifest
        self.trusted = {key_id(k): k for k in keys}
        # Per-pod keys certified by a trusted key (FORMAT.md section 9), by key id.
        self.certified: dict[str, list[Certificate]] = {}
        self.checkpoints: dict[str, SignedCheckpoint] = {}  # member name -> verified
        self.signed_by: dict[str, Ed25519PublicKey] = {}  # member name -> its trusted key
        self.manifest: dict[str, Any] = {}

    def find(self, code: str, message: str, member: str | None = None) -> None:
        self.report.findings.append(Finding(code, message, member))

    def run(self) -> None:
        if not self._manifest():
            return
        self._digests()
        self._keys()
        self._checkpoints()
        self._sample()
        self._verification()

    # -- 2. manifest and digests --------------------------------------------------------

    def _manifest(self) -> bool:
        data = self.members.get(layout.MANIFEST)
        if data is None:
            self.find("manifest-missing", f"the package has no {layout.MANIFEST}")
            return False
        self.report.manifest_sha256 = hashlib.sha256(data).hexdigest()
        try:
            manifest = orjson.loads(data)
            ok = (
                isinstance(manifest, dict)
                and manifest.get("format") == layout.FORMAT
                and isinstance(manifest.get("members"), dict)
                and isinstance(manifest.get("sample"), dict)
                and isinstance(manifest.get("period"), dict)
                and all(
                    isinstance(v, dict)
                    and isinstance(v.get("sha256"), str)
                    and isinstance(v.get("size"), int)
                    for v in manifest["members"].values()
                )
            )
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            self.find("manifest-corrupt", f"not an {layout.FORMAT} manifest", layout.MANIFEST)
            return False
        self.manifest = manifest
        self.report.source = str(manifest.get("source"))
        return True

    def _digests(self) -> None:
        listed: dict[str, dict[str, Any]] = self.manifest["members"]
        self.report.members = len(self.members)
        for name in layout.REQUIRED:
            if name not in listed:
                self.find("member-missing", f"the manifest does not list {name}", name)
        for name, want in sorted(listed.items()):
            data = self.members.get(name)
            if data is None:
                self.find("member-missing", "listed in the manifest but not in the package", name)
            elif len(data) != want["size"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
                self.find("digest-mismatch", "its SHA-256 or size differs from the manifest's "
                          "(the member was changed)", name)  # fmt: skip
            else:
                self.intact[name] = data
        for name in sorted(set(self.members) - set(listed) - {layout.MANIFEST}):
            self.find("member-unlisted", "in the package but not in the manifest", name)

    # -- 3. keys --------------------------------------------------------------------------

    def _keys(self) -> None:
        stored: dict[str, Ed25519PublicKey] = {}
        edges: dict[str, list[tuple[str, Any, str]]] = {}
        certificates: list[tuple[Certificate, str]] = []
        for name, data in self.intact.items():
            parsed = _ledger_name(name)
            if parsed is None:
                continue
            if parsed.kind == "key":
                try:
                    key = load_public_key(data)
                except KeyFileError as exc:
                    self.find("key-mismatch", str(exc), name)
                    continue
                if key_id(key) != parsed.key_id or public_pem(key) != data:
                    self.find("key-mismatch", "not exactly the PEM of the key its name says", name)
                    continue
                stored[parsed.key_id] = key
            elif parsed.kind == "rotation":
                rotation = self._signed_record(name, parsed, data, decode_rotation, "other keys")
                if rotation is not None:
                    edges.setdefault(rotation.old_key_id, []).append(
                        (rotation.new_key_id, rotation, name)
                    )
            elif parsed.kind == "certificate":
                cert = self._signed_record(name, parsed, data, decode_certificate, "another key")
                if cert is not None:
                    certificates.append((cert, name))
        # Trust flows from the given keys through rotations signed by a trusted key only.
        queue = deque(self.trusted)
        while queue:
            old = queue.popleft()
            for new, record, name in edges.get(old, []):
                if new in self.trusted:
                    continue
                try:
                    record.verify_with(self.trusted[old])
                except SignatureError as exc:
                    self.find("rotation-invalid", str(exc), name)
                    continue
                self.trusted[new] = record.new_public
                queue.append(new)
        self.report.trusted_keys = sorted(self.trusted)
        for cert, name in certificates:
            issuer = self.trusted.get(cert.issuer_key_id)
            if issuer is None:
                continue  # another root's: its keys stay untrusted here
            try:
                cert.verify_with(issuer)
            except SignatureError as exc:
                self.find("certificate-invalid", str(exc), name)
                continue
            self.certified.setdefault(cert.key_id, []).append(cert)

    def _signed_record(
        self,
        member: str,
        parsed: ObjectName,
        data: bytes,
        decode: Callable[[bytes], _Record],
        names: str,
    ) -> _Record | None:
        """The rotation or certificate member decoded, if it is the record its member name
        says; else `<kind>-invalid` (saying it `names` other than its member name)."""
        try:
            record = decode(data)
        except FormatError as exc:
            self.find(f"{parsed.kind}-invalid", str(exc), member)
            return None
        if not record.named_by(parsed):
            self.find(f"{parsed.kind}-invalid", f"names {names} than its member name", member)
            return None
        return record

    # -- 4. checkpoints -------------------------------------------------------------------

    def _checkpoints(self) -> None:
        for name, data in sorted(self.intact.items()):
            parsed = _ledger_name(name)
            if parsed is None or parsed.kind != "checkpoint":
                continue
            try:
                signed = decode_checkpoint(data)
            except FormatError as exc:
                self.find("checkpoint-corrupt", str(exc), name)
                continue
            cp = signed.checkpoint
            if (cp.stream, cp.epoch, cp.index) != (parsed.stream, parsed.epoch, parsed.index):
                self.find(
                    "checkpoint-misplaced", "its body names another stream, epoch or index", name
                )
                continue
            key = self.trusted.get(cp.key_id) or next(
                (
                    c.public
                    for c in self.certified.get(cp.key_id, ())
                    if c.subject.stream == cp.stream and c.valid_at(cp.time_ns)
                ),
                None,
            )
            if key is None:
                self.find("untrusted-key", f"signed by key {cp.key_id[:16]}…, which is not a "
                          "given --public-key, rotated to from one, nor certified by one for "
                          "this stream at the checkpoint's time", name)  # fmt: skip
                continue
            try:
                verify(key, signed.signature, signed.body, "checkpoint")
            except SignatureError as exc:
                self.find("bad-signature", str(exc), name)
                continue
            self.checkpoints[name] = signed
            self.signed_by[name] = key
        self.report.checkpoints = len(self.checkpoints)
        by_place = {
            (s.checkpoint.stream, s.checkpoint.epoch, s.checkpoint.index): (n, s)
            for n, s in self.checkpoints.items()
        }
        for (stream, epoch, index), (name, signed) in sorted(by_place.items()):
            before = by_place.get((stream, epoch, index - 1))
            if before is not None and signed.checkpoint.prev != body_digest(before[1].body):
                self.find("checkpoint-chain-broken", f"prev is not the digest of {before[0]}", name)

    # -- 5. sample and proofs -------------------------------------------------------------

    def _sample(self) -> None:
        params = self.manifest["sample"]
        seed, requested, population = (
            params.get("seed"),
            params.get("requested"),
            params.get("population"),
        )
        if (
            params.get("algorithm") != ALGORITHM
            or not isinstance(seed, str)
            or not all(isinstance(v, int) and v >= 0 for v in (requested, population))
        ):
            self.find(
                "manifest-corrupt", f"the sample is not described as {ALGORITHM}", layout.MANIFEST
            )
            return
        data = self.intact.get(layout.SAMPLE)
        if data is None:
            return  # missing or changed: already a finding
        try:
            rows = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        except ValueError:
            self.find("sample-mismatch", "not JSON Lines", layout.SAMPLE)
            return
        want = min(requested, population)
        if len(rows) != want or params.get("drawn") != want:
            self.find("sample-mismatch", f"{len(rows)} events, not min(requested {requested}, "
                      f"population {population}) = {want}", layout.SAMPLE)  # fmt: skip
        since, until = self._period()
        previous = ""
        for rank, row in enumerate(rows, start=1):
            where = f"{layout.SAMPLE} rank {rank}"
            try:
                stream, epoch, seq, key = row["stream"], row["epoch"], row["seq"], row["key"]
                proof_name = row["proof"]
                if not (isinstance(stream, str) and isinstance(epoch, int) and isinstance(seq, int)
                        and isinstance(key, str) and isinstance(proof_name, str)):  # fmt: skip
                    raise TypeError("wrong types")
            except (KeyError, TypeError):
                self.find("sample-mismatch", "a row lacks stream, epoch, seq, key or proof", where)
                continue
            if row.get("rank") != rank or sample_key(seed, stream, epoch, seq) != key:
                self.find("sample-mismatch", f"key or rank is not what seed {seed!r} gives "
                          f"for {stream} epoch {epoch} seq {seq}", where)  # fmt: skip
            elif key <= previous:
                self.find("sample-mismatch", "keys are not in increasing order", where)
            previous = max(previous, key)
            self._proof(row, proof_name, since, until)
        self.report.sampled = len(rows)

    def _period(self) -> tuple[int | None, int | None]:
        period = self.manifest["period"]
        try:
            since = parse_ns(period["since"]) if period.get("since") else None
            until = parse_ns(period["until"]) if period.get("until") else None
        except (ValueError, TypeError):
            self.find("manifest-corrupt", "the period is not two RFC 3339 times", layout.MANIFEST)
            return None, None
        return since, until

    def _proof(self, row: dict[str, Any], name: str, since: int | None, until: int | None) -> None:
        data = self.intact.get(name)
        if data is None:
            if name not in self.manifest["members"]:
                self.find(
                    "member-missing", f"the proof of rank {row['rank']} is not in the package", name
                )
            return
        try:
            proof = orjson.loads(data)
            cp_name = layout.LEDGER + proof["checkpoint"]["name"]
            cp_bytes = (proof["checkpoint"]["body"] + "\n" + proof["checkpoint"]["signature"]
                        + "\n").encode()  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            self.find("proof-invalid", f"not a proof ({exc})", name)
            return
        if self.intact.get(cp_name) != cp_bytes:
            self.find("proof-checkpoint-mismatch", f"made against {cp_name}, which the package "
                      "does not hold as the proof has it", name)  # fmt: skip
            return
        if cp_name not in self.checkpoints:
            return  # that checkpoint failed its own check: already a finding
        key = self.signed_by[cp_name]
        try:
            event = check_proof(proof, key)
        except ProofError as exc:
            self.find("proof-invalid", str(exc), name)
            return
        if (proof["stream"], proof["epoch"], proof["seq"], event.get("id")) != (
            row["stream"], row["epoch"], row["seq"], row.get("id")
        ):  # fmt: skip
            self.find("sample-mismatch", "the proof proves another event than the sample row", name)
            return
        try:
            when = parse_ns(str(event.get("time")))
        except ValueError:
            self.find("proof-invalid", "the proven event has no valid time", name)
            return
        if (since is not None and when < since) or (until is not None and when >= until):
            self.find(
                "sample-outside-period",
                f"event time {event.get('time')} is outside the period",
                name,
            )

    # -- 6. the recorded verification -----------------------------------------------------

    def _verification(self) -> None:
        data = self.intact.get(layout.VERIFY)
        if data is None:
            return
        try:
            verdict = orjson.loads(data)
            result = verdict.get("result") if isinstance(verdict, dict) else None
        except ValueError:
            result = None
        if result != "PASS":
            self.find("trail-failed", f"the verification recorded in the package is {result!r}, "
                      "not PASS", layout.VERIFY)  # fmt: skip


def describe(report: EvidenceReport) -> str:
    """The text form, for a person; trail text escaped."""
    from auditlock.ledger.escape import escape

    if report.ok:
        lines = [
            f"PASS: {escape(report.path)}: all {report.members} members match the manifest; "
            f"{report.checkpoints} checkpoints and {report.sampled} sampled events with "
            f"inclusion proofs verified under key(s) "
            + ", ".join(k[:16] + "…" for k in report.trusted_keys),
        ]
    else:
        lines = [f"FAIL: {escape(report.path)}: {len(report.findings)} problem(s)"]
    if report.source:
        lines.append(f"  source: {escape(report.source)}")
    if report.manifest_sha256:
        lines.append(f"  manifest.json sha256: {report.manifest_sha256}")
    for f in report.findings:
        where = f" ({escape(f.member)})" if f.member else ""
        lines.append(f"problem: [{f.code}]{where} {escape(f.message)}")
    return "\n".join(lines)
