"""A witness checker written from docs/FORMAT.md section 16 alone (hashlib, json,
cryptography; nothing from auditlock), for a file:// store. It returns the finding codes
of section 16's steps 1, 2 and 4, one per problem and place, so a test can compare them
with `auditlock verify --witness-key`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

RECORD = re.compile(r"(\d{12})\.json\Z")
MEMBERS = {"format", "witness", "seq", "prev", "time", "interval_ms", "key_id", "streams"}


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()


def spec_witness(store: Path, key: Ed25519PublicKey) -> list[tuple[str, str]]:
    """(code, where) for every problem, in the order found."""
    found: list[tuple[str, str]] = []
    for directory in sorted((store / "witness").iterdir()):
        seqs = sorted(int(m[1]) for p in directory.iterdir() if (m := RECORD.match(p.name)))
        if seqs != list(range(len(seqs))) and seqs:
            found.append(("witness-gap", directory.name))
        previous: bytes | None = None
        for seq in range(seqs[-1] + 1 if seqs else 0):
            path = directory / f"{seq:012d}.json"
            if not path.is_file():
                previous = None
                continue
            lines = path.read_bytes().split(b"\n")
            try:
                body = json.loads(lines[0])
                assert len(lines) == 3 and lines[2] == b"" and set(body) == MEMBERS
                assert body["format"] == "auditlock/witness/v1" and body["seq"] == seq
                assert body["witness"] == directory.name
                signature = base64.b64decode(lines[1], validate=True)
            except (ValueError, AssertionError):
                found.append(("witness-corrupt", path.name))
                previous = None
                continue
            try:
                assert body["key_id"] == key_id(key)
                key.verify(signature, lines[0])
            except (AssertionError, InvalidSignature):
                found.append(("witness-signature", path.name))
                previous = None
                continue
            expected = previous if seq else bytes(32)
            if expected is not None and bytes.fromhex(body["prev"]) != expected:
                found.append(("witness-chain-broken", path.name))
            previous = hashlib.sha256(lines[0]).digest()
            for entry in body["streams"]:
                name = (
                    f"streams/{entry['stream']}/{entry['epoch']:06d}/ckpt-{entry['index']:012d}"
                    ".ckpt"
                )
                checkpoint = store / name
                if not checkpoint.is_file():
                    found.append(("witness-missing-checkpoint", entry["stream"]))
                    continue
                stored_body = checkpoint.read_bytes().split(b"\n", 1)[0]
                if hashlib.sha256(stored_body).hexdigest() != entry["digest"]:
                    found.append(("witness-mismatch", entry["stream"]))
    return found
