"""docs/vectors/ (the worked example and invalid ledgers an outsider tests a verifier
with) is exactly what the code produces, its hashes are what FORMAT.md's formulas give
when computed here with hashlib alone, and verify gives each invalid ledger exactly the
findings cases.json promises."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tests.helpers.cli import cli

from ..vectors.generate_docs import OUT, generate

H = lambda data: hashlib.sha256(data).digest()  # noqa: E731 - FORMAT.md's notation
SEG = "streams/example/000000/seg-000000000000-000000000001.jsonl"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_regenerated_doc_vectors_equal_the_committed_ones(tmp_path: Path) -> None:
    generate(tmp_path / "v")
    committed, fresh = _files(OUT), _files(tmp_path / "v")
    assert sorted(committed) == sorted(fresh)
    for name in committed:
        assert committed[name] == fresh[name], f"docs/vectors/{name} differs; regenerate"


def _verify(store: Path) -> tuple[int, dict[str, object]]:
    code, out, _ = cli(
        "verify", f"file://{store}", "--public-key", str(OUT / "signing.pub"), "--json"
    )
    return code, json.loads(out)


def test_worked_example_hashes_follow_the_formulas() -> None:
    readme = (OUT / "README.md").read_text()
    lines = (OUT / "example" / SEG).read_bytes().split(b"\n")[:-1]
    leaf0, leaf1 = H(b"\x00" + lines[0]), H(b"\x00" + lines[1])
    assert f'"prev":"{leaf0.hex()}","seq":1' in lines[1].decode()
    root = H(b"\x01" + leaf0 + leaf1)
    public = load_pem_public_key((OUT / "signing.pub").read_bytes())
    prev = bytes(32)
    for index in range(3):
        data = (OUT / "example" / f"streams/example/000000/ckpt-{index:012d}.ckpt").read_bytes()
        body, sig, _ = data.split(b"\n")
        public.verify(base64.b64decode(sig), body)  # type: ignore[union-attr]
        fields = json.loads(body)
        assert fields["prev"] == prev.hex()
        prev = H(body)
        for value in (body.decode(), sig.decode(), prev.hex()):
            assert value in readme
        if index == 1:
            assert fields["root"] == root.hex() and fields["frontier"] == [root.hex()]
            assert fields["head"] == leaf1.hex() and fields["tree_size"] == 2
    for value in (leaf0.hex(), leaf1.hex(), root.hex(), *(line.decode() for line in lines)):
        assert value in readme


def test_example_passes() -> None:
    code, report = _verify(OUT / "example")
    assert code == 0, report
    assert report["events_verified"] == 2 and report["checkpoints_verified"] == 3


def test_each_invalid_ledger_gives_exactly_its_findings() -> None:
    cases = json.loads((OUT / "invalid" / "cases.json").read_text())
    assert len(cases) >= 15
    for case in cases:
        code, report = _verify(OUT / "invalid" / case["case"])
        found = report["findings"]
        assert code == 1, case
        assert len(found) == len(case["findings"]), (case["case"], found)
        for want, got in zip(case["findings"], found, strict=True):
            assert {k: got[k] for k in want} == want, (case["case"], found)  # type: ignore[index]


# Faults the independent verifier of tests/helpers/spec_verifier.py (written from FORMAT.md
# alone, a simple reading without the event rules, time gaps or names) must also refuse.
_SPEC_VERIFIER_CATCHES = (
    "altered-last-event",
    "altered-first-event",
    "deleted-segment",
    "deleted-checkpoint",
    "bad-signature",
    "unknown-key",
)


def test_the_vectors_serve_a_verifier_written_from_format_md_alone() -> None:
    from tests.helpers.spec_verifier import read_public_key, spec_verify

    key = read_public_key(OUT / "signing.pub")
    assert spec_verify(OUT / "example", key) == {"example": 2}
    for case in _SPEC_VERIFIER_CATCHES:
        try:
            spec_verify(OUT / "invalid" / case, key)
        except (AssertionError, ValueError, InvalidSignature, IndexError, KeyError):
            continue
        raise AssertionError(f"the independent verifier accepted invalid/{case}")
