"""The independent verifier written from docs/FORMAT.md alone (tests/helpers/spec_verifier.py),
run against the test vectors and a synthetic ledger. If the spec and the code drift apart,
it disagrees with `auditlock verify`."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import cli
from tests.helpers.spec_verifier import read_public_key, spec_verify

from ..vectors.generate import HERE


def test_independent_verifier_accepts_the_vectors() -> None:
    assert spec_verify(HERE / "store", read_public_key(HERE / "signing.pub")) == {"vector": 6}


def test_independent_verifier_agrees_with_auditlock_on_a_synthetic_ledger(tmp_path: Path) -> None:
    cli("keys", "generate", "--out", str(tmp_path / "k"))
    cli(
        "synth", "--store", f"file://{tmp_path}/s", "--key", str(tmp_path / "k/signing.key"),
        "--streams", "2", "--events", "1500", "--segment-events", "400", "--compress", "--no-fsync",
    )  # fmt: skip
    counts = spec_verify(tmp_path / "s", read_public_key(tmp_path / "k" / "signing.pub"))
    assert counts == {"synth-0-0000": 1500, "synth-0-0001": 1500}
    assert cli("verify", f"file://{tmp_path}/s")[0] == 0
