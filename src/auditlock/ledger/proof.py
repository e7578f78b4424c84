"""Inclusion proofs for single events (docs/FORMAT.md, "Proofs").

`build_proof` finds an event by id, and proves its line is leaf `seq` of the Merkle tree
signed by the newest checkpoint of its epoch (RFC 9162 2.1.3). `check_proof` verifies such
a proof offline with nothing but the public key:

    {"format": "auditlock/proof/v1", "stream", "epoch", "seq", "line",
     "tree_size", "path": [hex, ...],
     "checkpoint": {"name", "body", "signature"}, "public_key": PEM (informative only)}
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.certificate import decode_certificate
from auditlock.ledger.checkpoint import Checkpoint, SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import FormatError, ProofError, SignatureError
from auditlock.ledger.keys import key_id, load_public_key, public_pem, verify
from auditlock.ledger.limits import (
    MAX_CERTIFICATE_BYTES,
    MAX_CHECKPOINT_BYTES,
    MAX_KEY_BYTES,
    MAX_STORED_SEGMENT_BYTES,
)
from auditlock.ledger.lines import event_hash, line_prefix
from auditlock.ledger.merkle import inclusion_path, inclusion_paths, verify_inclusion
from auditlock.ledger.names import ObjectName, key_name, parse_name
from auditlock.ledger.segment import decode_segment
from auditlock.sinks.base import Destination, ObjectNotFound, ObjectUnreadable

FORMAT = "auditlock/proof/v1"


# A proof carries at most this many certificates of its checkpoint's key (renewals).
MAX_PROOF_CERTIFICATES = 16


def build_proof(
    destination: Destination, event_id: str, *, stream: str | None = None
) -> dict[str, Any]:
    """A proof for the event with `id` == event_id; ProofError if it cannot be proven."""
    prefix = f"streams/{stream}/" if stream else "streams/"
    epochs: dict[tuple[str, int], dict[str, list[ObjectName]]] = {}
    for name in destination.list(prefix):
        parsed = parse_name(name)
        if parsed is None or parsed.kind not in ("segment", "checkpoint"):
            continue
        group = epochs.setdefault((parsed.stream, parsed.epoch), {"segment": [], "checkpoint": []})
        group[parsed.kind].append(parsed)
    needle = b'"id":' + json.dumps(event_id).encode()
    for (stream_id, epoch), group in sorted(epochs.items()):
        segments = sorted(group["segment"], key=lambda s: s.first)
        for seg in segments:
            lines = decode_segment(_read_segment(destination, seg), compressed=seg.compressed)
            for offset, line in enumerate(lines):
                if needle in line and _event_id(line) == event_id:
                    return _prove(destination, stream_id, epoch, seg.first + offset, line, group)
    raise ProofError(f"no event with id {event_id!r} found under {prefix}")


def build_proofs(
    destination: Destination, stream: str, epoch: int, seqs: Iterable[int]
) -> dict[int, dict[str, Any]]:
    """Proofs for several events of one stream epoch, by seq, against the epoch's newest
    readable checkpoint; the epoch's segments are read and its tree built once (memory
    grows with the epoch: two hashes per event). ProofError if one cannot be proven."""
    wanted = sorted(set(seqs))
    group: dict[str, list[ObjectName]] = {"segment": [], "checkpoint": []}
    for name in destination.list(f"streams/{stream}/{epoch:06d}/"):
        parsed = parse_name(name)
        if parsed is not None and parsed.kind in group:
            group[parsed.kind].append(parsed)
    signed, candidate = _newest_checkpoint(destination, stream, epoch, group["checkpoint"])
    cp = signed.checkpoint
    if wanted and wanted[-1] >= cp.tree_size:
        raise ProofError(f"event seq {wanted[-1]} is not yet covered by a checkpoint")
    lines: dict[int, bytes] = {}
    leaves = _leaves(destination, group["segment"], cp.tree_size, keep=set(wanted), lines=lines)
    paths = inclusion_paths(wanted, leaves)
    pem = _stored_pem(destination, cp.key_id)
    certificates = _stored_certificates(destination, cp.key_id)
    return {
        seq: {
            "format": FORMAT,
            "stream": stream,
            "epoch": epoch,
            "seq": seq,
            "line": lines[seq].decode(),
            "tree_size": cp.tree_size,
            "path": [node.hex() for node in paths[seq]],
            "checkpoint": {
                "name": candidate.name,
                "body": signed.body.decode(),
                "signature": base64.b64encode(signed.signature).decode(),
            },
            "public_key": pem,
            **({"certificates": certificates} if certificates else {}),
        }
        for seq in wanted
    }


def _newest_checkpoint(
    destination: Destination, stream: str, epoch: int, checkpoints: list[ObjectName]
) -> tuple[SignedCheckpoint, ObjectName]:
    for candidate in sorted(checkpoints, key=lambda c: c.index, reverse=True):
        try:
            return decode_checkpoint(
                destination.get(candidate.name, MAX_CHECKPOINT_BYTES)
            ), candidate
        except (FormatError, ObjectNotFound, ObjectUnreadable):
            continue
    raise ProofError(f"stream {stream} epoch {epoch} has no readable checkpoint")


def _stored_pem(destination: Destination, key: str) -> str:
    try:
        return public_pem(load_public_key(destination.get(key_name(key), MAX_KEY_BYTES))).decode()
    except Exception:  # informative only; the verifier brings its own key
        return ""


def _stored_certificates(destination: Destination, key: str) -> list[str]:
    """The certificate records stored for `key` (FORMAT.md section 9), so that a proof
    checks against the root key that certified it; unreadable ones are left out."""
    found = []
    for name in destination.list(f"keys/certs/{key}-"):
        try:
            record = destination.get(name, MAX_CERTIFICATE_BYTES)
            decode_certificate(record)
        except (FormatError, ObjectNotFound, ObjectUnreadable):
            continue
        found.append(record.decode())
        if len(found) == MAX_PROOF_CERTIFICATES:
            break
    return found


def _certified_key(
    proof: dict[str, Any], root: Ed25519PublicKey, cp: Checkpoint
) -> Ed25519PublicKey | None:
    """The checkpoint's key, if one of the proof's certificates is issued by `root` and
    covers the checkpoint (FORMAT.md section 9: stream, key, validity at its time)."""
    records = proof.get("certificates")
    if not isinstance(records, list):
        return None
    for record in records[:MAX_PROOF_CERTIFICATES]:
        if not isinstance(record, str):
            continue
        try:
            cert = decode_certificate(record.encode())
            if cert.issuer_key_id != key_id(root):
                continue
            cert.verify_with(root)
        except (FormatError, SignatureError):
            continue
        if (
            cert.key_id == cp.key_id
            and cert.subject.stream == cp.stream
            and cert.valid_at(cp.time_ns)
        ):
            return cert.public
    return None


def _event_id(line: bytes) -> str | None:
    try:
        event = orjson.loads(line).get("event", {})
    except (ValueError, AttributeError):
        return None
    value = event.get("id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


def _prove(
    destination: Destination,
    stream: str,
    epoch: int,
    seq: int,
    line: bytes,
    group: dict[str, list[ObjectName]],
) -> dict[str, Any]:
    checkpoints = sorted(group["checkpoint"], key=lambda c: c.index, reverse=True)
    for candidate in checkpoints:
        try:
            data = destination.get(candidate.name, MAX_CHECKPOINT_BYTES)
            signed = decode_checkpoint(data)
        except (FormatError, ObjectNotFound, ObjectUnreadable):
            continue
        cp = signed.checkpoint
        if cp.tree_size <= seq:
            raise ProofError(f"event seq {seq} is not yet covered by a checkpoint")
        leaves = _leaves(destination, group["segment"], cp.tree_size)
        if event_hash(line) != leaves[seq]:
            raise ProofError("the event line read twice differs; the store is changing")
        try:
            pem = public_pem(
                load_public_key(destination.get(key_name(cp.key_id), MAX_KEY_BYTES))
            ).decode()
        except Exception:  # informative only; the verifier brings its own key
            pem = ""
        certificates = _stored_certificates(destination, cp.key_id)
        return {
            "format": FORMAT,
            "stream": stream,
            "epoch": epoch,
            "seq": seq,
            "line": line.decode(),
            "tree_size": cp.tree_size,
            "path": [node.hex() for node in inclusion_path(seq, leaves)],
            "checkpoint": {
                "name": candidate.name,
                "body": signed.body.decode(),
                "signature": base64.b64encode(signed.signature).decode(),
            },
            "public_key": pem,
            **({"certificates": certificates} if certificates else {}),
        }
    raise ProofError(f"stream {stream} epoch {epoch} has no readable checkpoint")


def _leaves(
    destination: Destination,
    segments: list[ObjectName],
    size: int,
    *,
    keep: set[int] | None = None,
    lines: dict[int, bytes] | None = None,
) -> list[bytes]:
    """The first `size` leaf hashes of an epoch; the lines at the seqs in `keep` go into
    `lines` (what a proof carries)."""
    leaves: list[bytes] = []
    for seg in sorted(segments, key=lambda s: s.first):
        if len(leaves) >= size:
            break
        if seg.first != len(leaves):
            raise ProofError(f"segments do not tile the epoch at seq {len(leaves)}")
        decoded = decode_segment(_read_segment(destination, seg), compressed=seg.compressed)
        if keep and lines is not None:
            for seq in keep.intersection(range(seg.first, seg.first + len(decoded))):
                lines[seq] = decoded[seq - seg.first]
        leaves.extend(event_hash(line) for line in decoded)
    if len(leaves) < size:
        raise ProofError(
            f"only {len(leaves)} of the {size} events the checkpoint covers are stored"
        )
    return leaves[:size]


def check_proof(proof: Any, public_key: Ed25519PublicKey | None) -> dict[str, Any]:
    """Verify a proof; return the proven event. ProofError names the failed step.

    Without `public_key` the key embedded in the proof is used; that only shows the
    proof is self-consistent, not who signed it."""
    if not isinstance(proof, dict) or proof.get("format") != FORMAT:
        raise ProofError(f"not an {FORMAT} document")
    try:
        cp_part = proof["checkpoint"]
        data = cp_part["body"].encode() + b"\n" + cp_part["signature"].encode() + b"\n"
        line = proof["line"].encode()
        path = [bytes.fromhex(node) for node in proof["path"]]
        seq = proof["seq"]
        stream, epoch = proof["stream"], proof["epoch"]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ProofError(f"proof is incomplete or malformed ({exc})") from None
    try:
        signed = decode_checkpoint(data)
    except FormatError as exc:
        raise ProofError(f"checkpoint in the proof: {exc}") from None
    cp = signed.checkpoint
    if public_key is None:
        try:
            public_key = load_public_key(str(proof.get("public_key", "")).encode())
        except Exception as exc:
            raise ProofError(
                f"no --public-key given and the proof's key is unusable ({exc})"
            ) from None
    if key_id(public_key) != cp.key_id:
        certified = _certified_key(proof, public_key, cp)
        if certified is None:
            raise ProofError(
                f"checkpoint is signed by key {cp.key_id[:16]}…, not by the given key "
                f"{key_id(public_key)[:16]}… nor by a key it certified for this stream "
                "at the checkpoint's time"
            )
        public_key = certified
    try:
        verify(public_key, signed.signature, signed.body, "checkpoint")
    except Exception as exc:
        raise ProofError(str(exc)) from None
    if (cp.stream, cp.epoch) != (stream, epoch) or proof.get("tree_size") != cp.tree_size:
        raise ProofError("proof names another stream, epoch or tree size than its checkpoint")
    try:
        envelope = orjson.loads(line)  # bounded depth: the proof file may be hostile
    except ValueError:
        raise ProofError("the event line is not JSON") from None
    if not line.startswith(line_prefix(epoch)) or (
        envelope.get("stream"),
        envelope.get("epoch"),
        envelope.get("seq"),
    ) != (stream, epoch, seq):
        raise ProofError("the event line names another stream, epoch or seq than the proof")
    verify_inclusion(seq, cp.tree_size, event_hash(line), path, cp.root)
    event: dict[str, Any] = envelope["event"]
    return event


def _read_segment(destination: Destination, seg: ObjectName) -> bytes:
    """A segment's bytes, no more than FORMAT.md allows (the store may be hostile)."""
    try:
        return destination.get(seg.name, MAX_STORED_SEGMENT_BYTES)
    except ObjectUnreadable as exc:
        raise FormatError(str(exc)) from None
