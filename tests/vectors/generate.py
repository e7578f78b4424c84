"""Regenerate the ledger test vectors (docs/FORMAT.md, "Test vectors").

    .venv/bin/python -m tests.vectors.generate        # rewrites tests/vectors/

Everything is deterministic: a fixed Ed25519 seed (Ed25519 signatures are deterministic),
a simulated clock, fixed events. tests/unit/test_ledger_vectors.py regenerates into a
temporary directory and compares every file byte for byte.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlock import sinks
from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.keys import Signer, public_pem, raw_public
from auditlock.ledger.merkle import consistency_path, inclusion_path, root_of
from auditlock.ledger.normalize import normalize_event
from auditlock.ledger.segment import decode_segment
from auditlock.ledger.synth import SimulatedClock
from auditlock.ledger.writer import StreamWriter

HERE = Path(__file__).resolve().parent
SEED = bytes(range(32))  # the private key: 000102...1f
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SECOND = 1_000_000_000

EVENTS: list[dict[str, Any]] = [
    {
        "id": "evt-0001",
        "time": "2026-01-01T01:00:00.5+01:00",
        "category": "access",
        "action": "get",
        "outcome": "success",
        "actor": {"kind": "user", "name": "alice@example.com", "ip": "10.0.0.7"},
        "target": {"resource": "secrets", "namespace": "shop", "name": "db-password"},
        "source": {"cluster": "prod", "namespace": "shop", "pod": "api-1", "container": "api"},
        "correlation": {"request_id": "req-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    },
    {
        "id": "evt-0002",
        "time": "2026-01-01T00:00:01.123456789Z",
        "category": "authorization",
        "action": "update",
        "outcome": "failure",
        "actor": {"kind": "serviceaccount", "name": "system:serviceaccount:shop:deployer"},
        "target": {"resource": "rolebindings", "namespace": "shop", "name": "admins"},
        "source": {"cluster": "prod", "node": "node-3"},
        "details": {"reason": "forbidden", "code": 403, "max": 9007199254740991, "neg": -1},
    },
    {
        "id": "evt-0003",
        "time": "2026-01-01T00:00:02Z",
        "category": "data",
        "action": "delete",
        "outcome": "success",
        "actor": {"kind": "user", "name": "Zoë Ünïcode ✓", "ip": "2001:DB8::1"},
        "target": {"resource": "orders"},
        "source": {},
        "details": {
            "quote": 'say "hi"\\n',
            "control": "tab\there\u0001",
            "emoji": "\U0001f600",
            "é": [True, False, None, {"b": 1, "a": 2}],
            "\ue000": "private use sorts after é",
        },
    },
    {
        "id": "evt-0004",
        "time": "2026-01-01T00:00:03.000001Z",
        "category": "configuration",
        "action": "patch",
        "outcome": "success",
        "actor": {"kind": "system", "name": "kubelet"},
        "target": {"resource": "configmaps", "namespace": "shop", "name": "settings"},
        "source": {"cluster": "prod", "namespace": "shop", "pod": "api-1"},
        "details": {"sha256_before": "ab" * 32, "sha256_after": "cd" * 32},
    },
    {
        "id": "evt-0005",
        "time": "2026-01-01T00:00:04Z",
        "category": "alert",
        "action": "crashloop",
        "outcome": "unknown",
        "actor": {"kind": "anonymous", "name": "-"},
        "target": {"resource": "pods", "namespace": "shop", "name": "api-1"},
        "source": {"cluster": "prod"},
    },
    {
        "id": "evt-0006",
        "time": "2026-01-01T00:10:00Z",
        "category": "access",
        "action": "exec",
        "outcome": "success",
        "actor": {"kind": "user", "name": "bob"},
        "target": {"resource": "pods", "namespace": "shop", "name": "api-1"},
        "source": {"cluster": "prod"},
    },
]


def generate(out: Path) -> None:
    if out.exists():
        for child in ("store", "signing.pub", "key.json", "events.json", "canonical.jsonl"):
            path = out / child
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    signer = Signer(Ed25519PrivateKey.from_private_bytes(SEED))
    (out / "signing.pub").write_bytes(public_pem(signer.public))
    _write_json(
        out / "key.json",
        {
            "private_key_seed_hex": SEED.hex(),
            "public_key_raw_hex": raw_public(signer.public).hex(),
            "key_id": signer.key_id,
        },
    )
    _write_json(out / "events.json", EVENTS)
    normalized = [normalize_event(event) for event in EVENTS]
    (out / "canonical.jsonl").write_bytes(b"".join(canonical_bytes(e) + b"\n" for e in normalized))

    destination = sinks.open(f"file://{out / 'store'}", fsync=False)
    clock = SimulatedClock(START_NS)
    # Epoch 0: genesis, a segment of 3 events, one of 2, a heartbeat, then close.
    writer = StreamWriter.resume(destination, "vector", signer, retention=None, clock=clock)
    writer.store(writer.heartbeat())
    for event in normalized[:3]:
        writer.append(event)
    clock.now += 3 * SECOND
    writer.store(writer.seal())
    for event in normalized[3:5]:
        writer.append(event)
    clock.now += 2 * SECOND
    writer.store(writer.seal())
    clock.now += 60 * SECOND
    writer.store(writer.heartbeat())
    clock.now += 1 * SECOND
    writer.store(writer.close())
    # Epoch 1: the stream restarts after its close; its genesis commits to the close.
    clock.now += 600 * SECOND
    writer = StreamWriter.resume(destination, "vector", signer, retention=None, clock=clock)
    writer.append(normalized[5])
    writer.store(writer.seal())
    clock.now += SECOND
    writer.store(writer.close())
    shutil.rmtree(out / "store" / ".tmp", ignore_errors=True)

    lines: list[bytes] = []
    for name in sorted(destination.list("streams/vector/000000/")):
        if "/seg-" in name:
            lines.extend(decode_segment(destination.get(name), compressed=False))
    from auditlock.ledger.lines import event_hash

    leaves = [event_hash(line) for line in lines]
    _write_json(
        out / "hashes.json",
        {
            "stream": "vector",
            "epoch": 0,
            "event_hashes": [leaf.hex() for leaf in leaves],
            "roots": {str(n): root_of(leaves[:n]).hex() for n in range(len(leaves) + 1)},
            "inclusion": {
                "seq": 3,
                "tree_size": 5,
                "path": [p.hex() for p in inclusion_path(3, leaves[:5])],
            },
            "consistency": {
                "old_size": 3,
                "new_size": 5,
                "path": [p.hex() for p in consistency_path(3, leaves[:5])],
            },
        },
    )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
