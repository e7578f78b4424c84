"""The committed test vectors are exactly what the code produces, and they verify."""

from __future__ import annotations

import json
from pathlib import Path

from auditlock.ledger.merkle import verify_consistency, verify_inclusion
from tests.helpers.cli import cli

from ..vectors.generate import HERE, generate

GENERATED = ("canonical.jsonl", "events.json", "hashes.json", "key.json", "signing.pub")


def _files(root: Path) -> dict[str, bytes]:
    names = [p for p in (root / "store").rglob("*") if p.is_file()]
    names += [root / name for name in GENERATED]
    return {str(p.relative_to(root)): p.read_bytes() for p in names}


def test_regenerated_vectors_equal_the_committed_ones(tmp_path: Path) -> None:
    generate(tmp_path)
    committed, fresh = _files(HERE), _files(tmp_path)
    assert sorted(committed) == sorted(fresh)
    for name in committed:
        assert committed[name] == fresh[name], f"tests/vectors/{name} differs; regenerate"


def test_vectors_verify_offline() -> None:
    code, out, _ = cli(
        "verify", f"file://{HERE / 'store'}", "--public-key", str(HERE / "signing.pub")
    )
    assert code == 0, out
    assert "1 streams (1 closed, 0 open), 6 events and 8 checkpoints verified" in out


def test_vector_proofs_verify() -> None:
    hashes = json.loads((HERE / "hashes.json").read_text())
    leaves = [bytes.fromhex(h) for h in hashes["event_hashes"]]
    inc = hashes["inclusion"]
    root5 = bytes.fromhex(hashes["roots"]["5"])
    path = [bytes.fromhex(p) for p in inc["path"]]
    verify_inclusion(inc["seq"], inc["tree_size"], leaves[inc["seq"]], path, root5)
    con = hashes["consistency"]
    root3 = bytes.fromhex(hashes["roots"]["3"])
    verify_consistency(3, 5, root3, root5, [bytes.fromhex(p) for p in con["path"]])
