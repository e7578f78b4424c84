"""`auditlock evidence` and `auditlock verify-evidence` on a real trail (file://), through
the CLI: a package checks out offline, the sample is reproducible, and every kind of
tampering fails with its code."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditlock.evidence.archive import read_archive, write_archive
from tests.helpers.cli import cli
from tests.helpers.report_trail import public_key_file, write_trail
from tests.unit.ledger_helpers import make_signer

SINCE, UNTIL = "2026-01-01T00:30:00Z", "2026-01-01T02:30:00Z"


class Trail:
    def __init__(self, root: Path) -> None:
        self.root = root
        signer = make_signer(11)
        self.url = write_trail(root / "store", signer)
        self.key = public_key_file(root / "key.pub", signer)
        self.other_key = public_key_file(root / "other.pub", make_signer(12))
        self.cache = root / "cache"
        self.cache.mkdir(mode=0o700)

    def evidence(self, out: Path, *, seed: str = "Q1-2026", sample: int = 8) -> dict[str, Any]:
        code, text, _ = cli(
            "evidence", self.url, "--public-key", str(self.key), "--cache-dir", str(self.cache),
            "--since", SINCE, "--until", UNTIL, "--sample", str(sample), "--seed", seed,
            "--out", str(out), "--json",
        )  # fmt: skip
        assert code == 0, text
        facts: dict[str, Any] = json.loads(text)
        return facts

    def check(
        self, package: Path, *extra: str, key: Path | None = None
    ) -> tuple[int, dict[str, Any]]:
        code, text, _ = cli("verify-evidence", str(package), "--public-key", str(key or self.key),
                         "--json", *extra)  # fmt: skip
        report: dict[str, Any] = json.loads(text)
        return code, report


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return Trail(tmp_path_factory.mktemp("evidence"))


@pytest.fixture(scope="module")
def package(trail: Trail) -> Path:
    out = trail.root / "evidence.tar.gz"
    trail.evidence(out)
    return out


def rewrite(
    source: Path, target: Path, change: Callable[[dict[str, bytes]], None], *, reseal: bool
) -> Path:
    """A copy of the package with `change` applied to its members; with `reseal` the
    manifest's digests are recomputed (an attacker who can rewrite the whole package)."""
    members = read_archive(source)
    change(members)
    if reseal:
        manifest = orjson.loads(members["manifest.json"])
        manifest["members"] = {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in members.items()
            if name != "manifest.json"
        }
        members["manifest.json"] = json.dumps(manifest).encode()
    write_archive(target, members, mtime=0)
    return target


def codes(report: dict[str, Any]) -> set[str]:
    return {f["code"] for f in report["findings"]}


def test_a_package_verifies_offline_with_the_public_key(trail: Trail, package: Path) -> None:
    code, report = trail.check(package)
    assert (code, report["result"], report["findings"]) == (0, "PASS", [])
    assert report["sampled"] == 8
    assert report["checkpoints"] > 0
    members = read_archive(package)
    manifest = orjson.loads(members["manifest.json"])
    # one event a minute from 00:30 to 02:00, then none until the writer resumes at 02:20
    assert manifest["sample"]["population"] == 90 + 10
    assert {"report.html", "verify.json", "sample.jsonl"} <= set(members)
    assert any(n.startswith("ledger/keys/") for n in members)
    assert orjson.loads(members["verify.json"])["result"] == "PASS"


def test_the_same_seed_draws_the_same_sample(trail: Trail, package: Path) -> None:
    """(Another seed draws another order: tests/unit/test_evidence_sample.py.)"""
    again = trail.evidence(trail.root / "again.tar.gz")
    assert again["sampled"] == 8
    sample = read_archive(package)["sample.jsonl"]
    assert read_archive(trail.root / "again.tar.gz")["sample.jsonl"] == sample


def test_the_manifest_digest_printed_at_build_time_can_be_pinned(
    trail: Trail, package: Path
) -> None:
    digest = hashlib.sha256(read_archive(package)["manifest.json"]).hexdigest()
    assert trail.check(package, "--manifest-sha256", digest)[0] == 0
    code, report = trail.check(package, "--manifest-sha256", "0" * 64)
    assert (code, codes(report)) == (1, {"manifest-not-pinned"})


def test_a_changed_member_fails_its_digest(trail: Trail, package: Path) -> None:
    def change(m: dict[str, bytes]) -> None:
        m["report.html"] = m["report.html"].replace(b"PASS", b"PASS!", 1)

    code, report = trail.check(rewrite(package, trail.root / "t1.tar.gz", change, reseal=False))
    assert (code, codes(report)) == (1, {"digest-mismatch"})
    assert report["findings"][0]["member"] == "report.html"


def test_a_missing_member_is_named(trail: Trail, package: Path) -> None:
    def change(m: dict[str, bytes]) -> None:
        del m[next(n for n in m if n.startswith("sample/proofs/"))]

    code, report = trail.check(rewrite(package, trail.root / "t2.tar.gz", change, reseal=False))
    assert code == 1
    assert codes(report) == {"member-missing"}


def test_an_added_member_is_named(trail: Trail, package: Path) -> None:
    def change(m: dict[str, bytes]) -> None:
        m["notes.txt"] = b"trust me"

    code, report = trail.check(rewrite(package, trail.root / "t3.tar.gz", change, reseal=False))
    assert (code, codes(report)) == (1, {"member-unlisted"})


def test_another_key_trusts_nothing_in_the_package(trail: Trail, package: Path) -> None:
    code, report = trail.check(package, key=trail.other_key)
    assert code == 1
    assert "untrusted-key" in codes(report)
    assert report["sampled"] == 8  # read, but none of its proofs could be checked


def test_a_proof_against_a_checkpoint_not_in_the_package_fails(trail: Trail, package: Path) -> None:
    """Even with the manifest rewritten to match: the proof must name a packaged checkpoint."""

    def change(m: dict[str, bytes]) -> None:
        name = next(n for n in m if n.startswith("sample/proofs/"))
        proof = orjson.loads(m[name])
        proof["checkpoint"]["signature"] = "A" * 86 + "=="
        m[name] = json.dumps(proof).encode()

    code, report = trail.check(rewrite(package, trail.root / "t4.tar.gz", change, reseal=True))
    assert (code, codes(report)) == (1, {"proof-checkpoint-mismatch"})


def test_a_proof_that_does_not_lead_to_the_checkpoint_root_fails(
    trail: Trail, package: Path
) -> None:
    def change(m: dict[str, bytes]) -> None:
        name = next(n for n in m if n.startswith("sample/proofs/"))
        proof = orjson.loads(m[name])
        proof["path"][0] = "00" * 32
        m[name] = json.dumps(proof).encode()

    code, report = trail.check(rewrite(package, trail.root / "t5.tar.gz", change, reseal=True))
    assert (code, codes(report)) == (1, {"proof-invalid"})


def test_a_sample_not_drawn_with_its_seed_fails(trail: Trail, package: Path) -> None:
    def change(m: dict[str, bytes]) -> None:
        manifest = orjson.loads(m["manifest.json"])
        manifest["sample"]["seed"] = "a seed chosen afterwards"
        m["manifest.json"] = json.dumps(manifest).encode()

    code, report = trail.check(rewrite(package, trail.root / "t6.tar.gz", change, reseal=True))
    assert code == 1
    assert codes(report) == {"sample-mismatch"}


def test_a_hostile_archive_is_refused_and_nothing_is_extracted(
    trail: Trail, tmp_path: Path
) -> None:
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"pwn"))
    hostile = tmp_path / "hostile.tar.gz"
    import gzip

    hostile.write_bytes(gzip.compress(raw.getvalue()))
    code, report = trail.check(hostile)
    assert (code, codes(report)) == (1, {"member-unsafe"})
    assert not (tmp_path.parent.parent / "outside.txt").exists()


def test_usage_errors_exit_2(trail: Trail, package: Path, tmp_path: Path) -> None:
    assert (
        cli("verify-evidence", str(tmp_path / "none.tar.gz"), "--public-key", str(trail.key))[0]
        == 2
    )
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    assert cli("verify-evidence", str(package), "--public-key", str(bad_key))[0] == 2


def test_verify_evidence_needs_neither_duckdb_nor_matplotlib(trail: Trail, package: Path) -> None:
    """What an auditor's machine needs: the auditlock CLI and a key, not the review extras."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from auditlock.cli.main import main\n"
        f"code = main(['verify-evidence', {str(package)!r}, '--public-key', {str(trail.key)!r}])\n"
        "heavy = sorted(m for m in ('duckdb', 'matplotlib', 'pyarrow') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout
