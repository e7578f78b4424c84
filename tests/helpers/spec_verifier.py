"""An independent verifier written from docs/FORMAT.md alone (hashlib, json, cryptography;
nothing from auditlock). Tests run it beside `auditlock verify`: if the spec and the code
drift apart, the two disagree."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

H = lambda data: hashlib.sha256(data).digest()  # noqa: E731 - FORMAT.md's notation


ZERO = bytes(32)


SEG = re.compile(r"seg-(\d{12})-(\d{12})\.jsonl(\.gz)?$")


CKPT = re.compile(r"ckpt-(\d{12})\.ckpt$")


def mth(leaves: list[bytes]) -> bytes:
    """FORMAT.md section 7 / RFC 9162 2.1.1, recursively."""
    if not leaves:
        return H(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return H(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def fold(frontier: list[bytes]) -> bytes:
    if not frontier:
        return H(b"")
    root = frontier[-1]
    for node in reversed(frontier[:-1]):
        root = H(b"\x01" + node + root)
    return root


def spec_verify(store: Path, trusted: Ed25519PublicKey) -> dict[str, int]:
    """Events verified per stream; raises AssertionError at the first violation."""
    raw = trusted.public_bytes(Encoding.Raw, PublicFormat.Raw)
    trusted_id = hashlib.sha256(raw).hexdigest()
    counts: dict[str, int] = {}
    for stream_dir in sorted((store / "streams").iterdir()):
        stream = stream_dir.name
        incoming = ZERO
        counts[stream] = 0
        for epoch_dir in sorted(stream_dir.iterdir()):
            epoch = int(epoch_dir.name)
            lines: list[bytes] = []
            for path in sorted(epoch_dir.iterdir()):
                m = SEG.match(path.name)
                if not m:
                    continue
                data = path.read_bytes()
                data = gzip.decompress(data) if m.group(3) else data
                assert data.endswith(b"\n")
                part = data[:-1].split(b"\n")
                assert int(m.group(1)) == len(lines)
                assert len(part) == int(m.group(2)) - int(m.group(1)) + 1
                lines.extend(part)
            leaves, prev = [], ZERO
            for seq, line in enumerate(lines):
                assert line.startswith(b'{"epoch":%d,"event":' % epoch)
                tail = b',"prev":"%s","seq":%d,"stream":"%s"}' % (
                    prev.hex().encode(),
                    seq,
                    stream.encode(),
                )
                assert line.endswith(tail)
                prev = H(b"\x00" + line)
                leaves.append(prev)
            checkpoints = sorted(p for p in epoch_dir.iterdir() if CKPT.match(p.name))
            previous = incoming
            for index, path in enumerate(checkpoints):
                body, signature, rest = path.read_bytes().split(b"\n")
                assert rest == b""
                cp = json.loads(body)
                assert cp["format"] == "auditlock/checkpoint/v1"
                assert (cp["stream"], cp["epoch"], cp["index"]) == (stream, epoch, index)
                key = trusted if cp["key_id"] == trusted_id else certified(store, cp, trusted)
                key.verify(base64.b64decode(signature), body)
                assert bytes.fromhex(cp["prev"]) == previous
                n = cp["tree_size"]
                assert bytes.fromhex(cp["root"]) == mth(leaves[:n])
                assert bytes.fromhex(cp["root"]) == fold([bytes.fromhex(f) for f in cp["frontier"]])
                assert bytes.fromhex(cp["head"]) == (leaves[n - 1] if n else ZERO)
                previous = H(body)
            assert json.loads(checkpoints[-1].read_bytes().split(b"\n")[0])["tree_size"] == len(
                leaves
            )
            incoming = previous
            counts[stream] += len(lines)
    return counts


def certified(store: Path, cp: dict[str, object], root: Ed25519PublicKey) -> Ed25519PublicKey:
    """FORMAT.md section 9: the key a certificate issued by `root` vouches for, for the
    checkpoint's stream, at the checkpoint's time (stored times compare as strings)."""
    root_id = hashlib.sha256(root.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()
    for path in sorted((store / "keys" / "certs").glob(f"{cp['key_id']}-*.json")):
        body, signature, rest = path.read_bytes().split(b"\n")
        cert = json.loads(body)
        raw = base64.b64decode(cert["public_key"])
        if (
            rest == b""
            and cert["format"] == "auditlock/certificate/v1"
            and cert["issuer_key_id"] == root_id
            and cert["key_id"] == cp["key_id"] == hashlib.sha256(raw).hexdigest()
            and cert["stream"] == cp["stream"]
            and cert["not_before"] <= str(cp["time"]) <= cert["not_after"]
        ):
            root.verify(base64.b64decode(signature), body)
            return Ed25519PublicKey.from_public_bytes(raw)
    raise AssertionError(f"no certificate from the root covers key {cp['key_id']}")


def read_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM Ed25519 public key from a file."""
    key = load_pem_public_key(path.read_bytes())
    assert isinstance(key, Ed25519PublicKey)
    return key
