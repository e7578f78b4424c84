"""Regenerate docs/vectors/: the worked example and the invalid ledgers of docs/FORMAT.md.

    .venv/bin/python -m tests.vectors.generate_docs        # rewrites docs/vectors/

Deterministic (fixed Ed25519 seed, simulated clock, fixed events), so
tests/unit/test_ledger_doc_vectors.py regenerates into a temporary directory and compares
every file byte for byte, then runs `auditlock verify` on each ledger and checks the
findings listed in cases.json. Invalid ledgers whose fault is signed are written by a
real StreamWriter holding the key; the others are the valid example with one object
changed, added or removed, as an attacker with write access would.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlock import sinks
from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.checkpoint import decode_checkpoint
from auditlock.ledger.keys import Signer, public_pem, raw_public
from auditlock.ledger.lines import event_hash
from auditlock.ledger.normalize import normalize_event
from auditlock.ledger.segment import decode_segment
from auditlock.ledger.synth import SimulatedClock
from auditlock.ledger.writer import StreamWriter

OUT = Path(__file__).resolve().parents[2] / "docs" / "vectors"
SEED = bytes(range(32))  # the private key: 000102...1f (the same key as tests/vectors)
OTHER_SEED = bytes(range(32, 64))  # a key nobody trusts
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SECOND = 1_000_000_000
STREAM = "example"

EVENTS: list[dict[str, Any]] = [
    {
        "id": "e-1",
        "time": "2026-01-01T01:00:00.25+01:00",
        "category": "access",
        "action": "get",
        "outcome": "success",
        "actor": {"kind": "user", "name": "alice", "ip": "::FFFF:10.0.0.7"},
        "target": {"resource": "secrets", "namespace": "shop", "name": "db"},
        "source": {"cluster": "prod", "pod": "api-1"},
    },
    {
        "id": "e-2",
        "time": "2026-01-01T00:00:00.5Z",
        "category": "data",
        "action": "delete",
        "outcome": "failure",
        "actor": {"kind": "serviceaccount", "name": "shop:cleaner"},
        "target": {"resource": "orders", "name": "o-7"},
        "source": {},
        "details": {"rows": 3, "reason": "café", "ok": None},
    },
]

Store = Any  # a file:// destination


def _signer(seed: bytes) -> Signer:
    return Signer(Ed25519PrivateKey.from_private_bytes(seed))


def _write(
    root: Path,
    events: list[bytes],
    *,
    signer: Signer | None = None,
    seal_kind: str = "seal",
    close_after_s: int = 1,
) -> Store:
    """The example ledger: genesis at T0, the events sealed at T0+1 s, close after that.

    `seal_kind` "heartbeat": the checkpoint over the events is called a heartbeat (a
    writer breaking section 8). Events are canonical bytes, appended as they are."""
    dest = sinks.open(f"file://{root}", fsync=False)
    clock = SimulatedClock(START_NS)
    writer = StreamWriter.resume(dest, STREAM, signer or _signer(SEED), retention=None, clock=clock)
    writer.store(writer.heartbeat())
    for event in events:
        writer.append_canonical(event)
    clock.now += SECOND
    if seal_kind == "seal":
        writer.store(writer.seal())
    else:
        writer.store(writer._preamble() + writer._cut_segments() + [writer._checkpoint(seal_kind)])
    clock.now += close_after_s * SECOND
    writer.store(writer.close())
    shutil.rmtree(root / ".tmp", ignore_errors=True)
    return dest


def _canonical() -> list[bytes]:
    return [canonical_bytes(normalize_event(e)) for e in EVENTS]


def _objects(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _segment(root: Path) -> Path:
    return next(p for n, p in _objects(root).items() if "/seg-" in n)


def _checkpoint(root: Path, index: int) -> Path:
    return root / f"streams/{STREAM}/000000/ckpt-{index:012d}.ckpt"


def _replace(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data, (path, old)
    path.chmod(0o644)
    path.write_bytes(data.replace(old, new, 1))


def _seg_name() -> str:
    return f"streams/{STREAM}/000000/seg-000000000000-000000000001.jsonl"


def _ckpt_name(index: int) -> str:
    return f"streams/{STREAM}/000000/ckpt-{index:012d}.ckpt"


# -- the invalid ledgers: (case, what was done, how to make it, expected findings) ----------


def _copy_of_example(root: Path, example: Path) -> None:
    shutil.copytree(example, root)


def _pad_bits(path: Path) -> None:
    body, sig, _ = path.read_bytes().split(b"\n")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3:-2])
    forged = sig[:-3] + alphabet[last ^ 1 : (last ^ 1) + 1] + b"=="
    path.chmod(0o644)
    path.write_bytes(body + b"\n" + forged + b"\n")


def _bad_signature(path: Path) -> None:
    body = path.read_bytes().split(b"\n")[0]
    path.chmod(0o644)
    path.write_bytes(body + b"\n" + base64.b64encode(bytes(64)) + b"\n")


def _edit(action: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def make(root: Path, example: Path) -> None:
        _copy_of_example(root, example)
        action(root)

    return make


def _signed(events: Callable[[], list[bytes]], **kwargs: Any) -> Callable[[Path, Path], None]:
    def make(root: Path, example: Path) -> None:
        _write(root, events(), **kwargs)

    return make


def _with_float() -> list[bytes]:
    first, second = _canonical()
    return [first, second.replace(b'"rows":3', b'"rows":3.0')]


def _with_whitespace() -> list[bytes]:
    first, second = _canonical()
    return [first.replace(b'"action":"get",', b'"action":"get", '), second]


def _with_duplicate_member() -> list[bytes]:
    first, second = _canonical()
    twice = b'"outcome":"failure","outcome":"success"'
    return [first.replace(b'"outcome":"success"', twice), second]


def _with_extra_envelope_member() -> list[bytes]:
    first, second = _canonical()
    return [first + b',"signed_by":"admin"', second]


def _with_mapped_ip_in_hex() -> list[bytes]:
    first, second = _canonical()
    return [first.replace(b"::ffff:10.0.0.7", b"::ffff:a00:7"), second]


def _gzip_with_trailing_bytes(root: Path) -> None:
    seg = root / _seg_name()
    data = seg.read_bytes()
    seg.chmod(0o644)
    seg.unlink()
    (root / (_seg_name() + ".gz")).write_bytes(gzip.compress(data, mtime=0) + b"\x00\x00")


def _duplicate_segment(root: Path) -> None:
    data = (root / _seg_name()).read_bytes()
    (root / (_seg_name() + ".gz")).write_bytes(gzip.compress(data, mtime=0))


def _other_key_store(root: Path, example: Path) -> None:
    _write(root, _canonical(), signer=_signer(OTHER_SEED))


CASES: list[tuple[str, str, Callable[[Path, Path], None], list[dict[str, Any]]]] = [
    (
        "altered-last-event",
        "seq 1's outcome changed from failure to success (no later line commits to it)",
        _edit(lambda r: _replace(r / _seg_name(), b'"outcome":"failure"', b'"outcome":"success"')),
        [{"code": "root-mismatch", "first_seq": 0, "last_seq": 1}],
    ),
    (
        "altered-first-event",
        "seq 0's actor name changed (seq 1's prev no longer matches)",
        _edit(lambda r: _replace(r / _seg_name(), b'"name":"alice"', b'"name":"mallory"')),
        [{"code": "chain-broken", "first_seq": 0, "last_seq": 1}],
    ),
    (
        "deleted-segment",
        "the only segment deleted",
        _edit(lambda r: (r / _seg_name()).unlink()),
        [{"code": "events-missing", "first_seq": 0, "last_seq": 1}],
    ),
    (
        "deleted-checkpoint",
        "checkpoint 1 (the seal) deleted",
        _edit(lambda r: _checkpoint(r, 1).unlink()),
        [{"code": "checkpoint-missing"}],
    ),
    (
        "bad-signature",
        "checkpoint 1's signature replaced by 64 zero bytes",
        _edit(lambda r: _bad_signature(_checkpoint(r, 1))),
        [{"code": "bad-signature", "object": _ckpt_name(1)}],
    ),
    (
        "signature-pad-bits",
        "checkpoint 1's signature line with a non-zero pad bit (same signature bytes)",
        _edit(lambda r: _pad_bits(_checkpoint(r, 1))),
        [{"code": "checkpoint-corrupt", "object": _ckpt_name(1)}],
    ),
    (
        "unknown-key",
        "every object written and signed by another key (verify with --public-key signing.pub)",
        _other_key_store,
        [
            {"code": "unknown-key", "object": _ckpt_name(0)},
            {"code": "unknown-key", "object": _ckpt_name(1)},
            {"code": "unknown-key", "object": _ckpt_name(2)},
        ],
    ),
    (
        "float-in-event",
        "signed: seq 1 holds details.rows 3.0 (floats are refused)",
        _signed(_with_float),
        [{"code": "event-invalid", "first_seq": 1, "object": _seg_name()}],
    ),
    (
        "mapped-ip-in-hex",
        "signed: seq 0's actor.ip is ::ffff:a00:7, not the stored form ::ffff:10.0.0.7",
        _signed(_with_mapped_ip_in_hex),
        [{"code": "event-invalid", "first_seq": 0, "object": _seg_name()}],
    ),
    (
        "whitespace-in-event",
        "signed: seq 0 has a space after a comma",
        _signed(_with_whitespace),
        [{"code": "line-not-canonical", "first_seq": 0, "object": _seg_name()}],
    ),
    (
        "duplicate-member",
        "signed: seq 0 has outcome twice (failure, then success)",
        _signed(_with_duplicate_member),
        [{"code": "line-not-canonical", "first_seq": 0, "object": _seg_name()}],
    ),
    (
        "extra-envelope-member",
        'signed: seq 0\'s line has "signed_by" between event and prev',
        _signed(_with_extra_envelope_member),
        [{"code": "line-not-canonical", "first_seq": 0, "object": _seg_name()}],
    ),
    (
        "heartbeat-grew",
        "signed: the checkpoint over the two events has kind heartbeat",
        _signed(_canonical, seal_kind="heartbeat"),
        [{"code": "heartbeat-grew", "object": _ckpt_name(1)}],
    ),
    (
        "time-gap",
        "signed: the close comes 200 s after the seal; heartbeat_ms is 60000, slack 30 s",
        _signed(_canonical, close_after_s=200),
        [{"code": "time-gap", "object": _ckpt_name(2), "first_seq": 2, "last_seq": 2}],
    ),
    (
        "truncated-tail",
        "the close checkpoint deleted (the stream looks open and silent)",
        _edit(lambda r: _checkpoint(r, 2).unlink()),
        [{"code": "stream-stale", "first_seq": 2}],
    ),
    (
        "gzip-trailing-bytes",
        "the segment gzip-compressed with two zero bytes after the gzip member",
        _edit(_gzip_with_trailing_bytes),
        [{"code": "segment-corrupt", "object": _seg_name() + ".gz", "first_seq": 0, "last_seq": 1}],
    ),
    (
        "duplicated-segment",
        "a gzip copy of the segment stored beside it",
        _edit(_duplicate_segment),
        [{"code": "segment-overlap", "object": _seg_name() + ".gz"}],
    ),
    (
        "unexpected-object",
        "a file named notes.txt at the top of the store",
        _edit(lambda r: (r / "notes.txt").write_bytes(b"hello\n")),
        [{"code": "unexpected-object", "object": "notes.txt"}],
    ),
]


def generate(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    signer = _signer(SEED)
    (out / "signing.pub").write_bytes(public_pem(signer.public))
    example = out / "example"
    canonical = _canonical()
    _write(example, canonical)
    (out / "events.json").write_text(json.dumps(EVENTS, indent=2, ensure_ascii=False) + "\n")
    cases = []
    for name, what, make, findings in CASES:
        make(out / "invalid" / name, example)
        shutil.rmtree(out / "invalid" / name / ".tmp", ignore_errors=True)
        cases.append({"case": name, "change": what, "findings": findings})
    (out / "invalid" / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")
    (out / "README.md").write_text(_readme(example, canonical, signer))


def _readme(example: Path, canonical: list[bytes], signer: Signer) -> str:
    lines = decode_segment((example / _seg_name()).read_bytes(), compressed=False)
    leaves = [event_hash(line) for line in lines]
    root = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    checkpoints = [_checkpoint(example, i).read_bytes() for i in range(3)]
    decoded = [decode_checkpoint(c) for c in checkpoints]
    assert decoded[1].checkpoint.root == root
    parts = [
        "# Test vectors for an independent verifier\n",
        "Generated by `python -m tests.vectors.generate_docs`; checked against the code by "
        "tests/unit/test_ledger_doc_vectors.py. Every value below is complete (no `...`). "
        "docs/FORMAT.md defines what each one means; `H` is SHA-256.\n",
        "## 1. The worked example (`example/`)\n",
        "### Key (FORMAT.md section 9)\n",
        _table(
            [
                ("private key seed (RFC 8032)", SEED.hex()),
                ("raw public key", raw_public(signer.public).hex()),
                ("key id = H(raw public key)", signer.key_id),
                ("stored as (PEM below; also `signing.pub` here)", f"keys/{signer.key_id}.pub"),
            ]
        ),
        "```\n" + public_pem(signer.public).decode() + "```\n",
        "### Events (sections 3 and 4)\n",
        "As the source sent them (`events.json`); note the offset time, the IPv4-mapped "
        "address in capitals, `null` inside `details`:\n",
        "```json\n" + json.dumps(EVENTS, indent=2, ensure_ascii=False) + "\n```\n",
        "Their canonical bytes (stored form: UTC time with nine digits, RFC 5952 address, "
        "members sorted, UTF-8):\n",
        "```\n" + "\n".join(c.decode() for c in canonical) + "\n```\n",
        "### Lines and event hashes (section 5)\n",
        f"Stream `{STREAM}`, epoch 0. Segment `{_seg_name()}` holds these two lines, each "
        "followed by LF:\n",
        "```\n" + "\n".join(line.decode() for line in lines) + "\n```\n",
        _table(
            [
                ("prev of seq 0", "0" * 64),
                ("event hash of seq 0 = H(0x00 ‖ line 0) = prev of seq 1", leaves[0].hex()),
                ("event hash of seq 1 = H(0x00 ‖ line 1)", leaves[1].hex()),
            ]
        ),
        "### Merkle tree (section 7)\n",
        _table(
            [
                ('root of size 0 = H("")', decoded[0].checkpoint.root.hex()),
                ("root of size 2 = H(0x01 ‖ leaf 0 ‖ leaf 1)", root.hex()),
                ("frontier of size 2 (one perfect subtree)", f"[{root.hex()}]"),
            ]
        ),
        "### Checkpoints (section 8)\n",
        "Each object is BODY LF signature LF; the digest H(BODY) is the next one's `prev`.\n",
    ]
    for index, (data, signed) in enumerate(zip(checkpoints, decoded, strict=True)):
        body, sig, _ = data.split(b"\n")
        parts.append(f"`{_ckpt_name(index)}` (kind `{signed.checkpoint.kind}`):\n")
        parts.append("```\n" + body.decode() + "\n" + sig.decode() + "\n```\n")
        parts.append(_table([("digest H(BODY)", signed.digest.hex())]))
    parts += [
        "`auditlock verify file://docs/vectors/example --public-key docs/vectors/signing.pub` "
        "passes: 1 stream (closed), 2 events, 3 checkpoints.\n",
        "## 2. Invalid ledgers (`invalid/<case>/`)\n",
        "Each is a complete store. Verify each with `--public-key signing.pub`; it must "
        "fail with exactly the findings below (code, and where given the object and seq "
        "range); `invalid/cases.json` lists the same for a program. Warnings are not "
        "listed. `truncated-tail` depends on the clock: it is stale once the verification "
        "time is more than 90 s after its last checkpoint (2026-01-01T00:00:01Z).\n",
    ]
    rows = ["| case | change | findings |", "|---|---|---|"]
    for name, what, _, findings in CASES:
        text = "; ".join(
            f"`{f['code']}`" + "".join(f" {k}={v}" for k, v in f.items() if k != "code")
            for f in findings
        )
        rows.append(f"| `{name}` | {what} | {text} |")
    parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def _table(rows: list[tuple[str, str]]) -> str:
    return "| what | value |\n|---|---|\n" + "".join(f"| {k} | `{v}` |\n" for k, v in rows)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
