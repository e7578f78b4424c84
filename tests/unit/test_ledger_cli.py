"""The ledger's command line contract: keys, synth, verify (0/1/2), prove, verify-proof."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.helpers.cli import cli


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    code, _out, err = cli("keys", "generate", "--out", str(tmp_path / "k"))
    assert code == 0, err
    return tmp_path / "k"


@pytest.fixture
def store(tmp_path: Path, keys: Path) -> Path:
    root = tmp_path / "store"
    code, out, err = cli(
        "synth", "--store", f"file://{root}", "--key", str(keys / "signing.key"),
        "--streams", "2", "--events", "2500", "--segment-events", "500", "--no-fsync",
        "--retention-days", "10",
    )  # fmt: skip
    assert code == 0, err
    assert "2 streams, 5000 events" in out
    return root


def writable(path: Path) -> Path:
    os.chmod(path, 0o644)
    return path


def verify(store: Path, keys: Path, *extra: str) -> tuple[int, str, str]:
    return cli("verify", f"file://{store}", "--public-key", str(keys / "signing.pub"), *extra)


def test_keys_generate_writes_pem_pair_and_refuses_to_overwrite(keys: Path) -> None:
    private, public = (keys / "signing.key").read_text(), (keys / "signing.pub").read_text()
    assert private.startswith("-----BEGIN PRIVATE KEY-----")
    assert public.startswith("-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE((keys / "signing.key").stat().st_mode) == 0o600
    code, _, err = cli("keys", "generate", "--out", str(keys))
    assert code == 2 and "--force" in err
    ids = {cli("keys", "id", str(keys / name))[1] for name in ("signing.key", "signing.pub")}
    assert len(ids) == 1 and len(ids.pop().strip()) == 64


def test_verify_passes_and_reports_json(store: Path, keys: Path) -> None:
    code, out, err = verify(store, keys, "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["result"] == "PASS"
    assert report["events_verified"] == 5000
    assert {s["closed"] for s in report["streams"]} == {True}
    assert report["objects"] and all(o["mode"] == "Locked" for o in report["objects"])


def test_verify_usage_errors_exit_2_without_traceback(tmp_path: Path, keys: Path) -> None:
    code, _, err = cli("verify", f"file://{tmp_path}/missing")
    assert code == 2 and "no such directory" in err and "Traceback" not in err
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    code, _, err = cli("verify", f"file://{tmp_path}", "--public-key", str(bad))
    assert code == 2 and "not a PEM public key" in err
    code, _, err = cli("verify", "ftp://example/x")
    assert code == 2 and "error:" in err
    code, _out, err = cli("verify", f"file://{tmp_path}", "--since", "yesterday")
    assert code == 2 and "--since" in err


def test_empty_store_is_a_finding(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, out, _ = cli("verify", f"file://{tmp_path}/empty")
    assert code == 1 and "no ledger objects" in out


def _first(store: Path, kind: str) -> Path:
    return sorted(store.glob(f"streams/*/000000/{kind}-*"))[1]


def test_corrupt_checkpoint_is_a_finding(store: Path, keys: Path) -> None:
    writable(_first(store, "ckpt")).write_bytes(b"\x00\xffgarbage")
    code, out, err = verify(store, keys)
    assert code == 1 and "checkpoint-corrupt" in out and err == ""


def test_unknown_checkpoint_format_version_is_a_finding(store: Path, keys: Path) -> None:
    path = _first(store, "ckpt")
    data = path.read_bytes().replace(b"auditlock/checkpoint/v1", b"auditlock/checkpoint/v9")
    writable(path).write_bytes(data)
    code, out, _ = verify(store, keys)
    assert code == 1 and "unknown checkpoint format 'auditlock/checkpoint/v9'" in out


def test_truncated_segment_is_a_finding(store: Path, keys: Path) -> None:
    path = _first(store, "seg")
    data = path.read_bytes()
    writable(path).write_bytes(data[: len(data) // 2])
    code, out, err = verify(store, keys)
    assert code == 1 and "truncated" in out and str(path.name) in out and err == ""


def test_unexpected_object_is_a_finding(store: Path, keys: Path) -> None:
    (store / "streams" / "notes.txt").write_text("hello")
    code, out, _ = verify(store, keys)
    assert code == 1 and "unexpected-object" in out and "streams/notes.txt" in out


def test_compressed_segments_verify_and_corrupt_gzip_is_named(tmp_path: Path, keys: Path) -> None:
    root = tmp_path / "gz"
    code, _, err = cli(
        "synth", "--store", f"file://{root}", "--key", str(keys / "signing.key"),
        "--events", "1200", "--compress", "--no-fsync",
    )  # fmt: skip
    assert code == 0, err
    assert verify(root, keys)[0] == 0
    path = sorted(root.glob("streams/*/000000/seg-*.jsonl.gz"))[0]
    writable(path).write_bytes(path.read_bytes()[:-20])
    code, out, _ = verify(root, keys)
    assert code == 1 and "not valid gzip" in out


def test_require_retention(store: Path, keys: Path, tmp_path: Path) -> None:
    assert verify(store, keys, "--require-retention", "5")[0] == 0
    code, out, _ = verify(store, keys, "--require-retention", "30")
    assert code == 1 and "retention-short" in out
    unlocked = tmp_path / "unlocked"
    cli(
        "synth", "--store", f"file://{unlocked}", "--key", str(keys / "signing.key"),
        "--events", "10", "--no-fsync",
    )  # fmt: skip
    code, out, _ = verify(unlocked, keys, "--require-retention", "1")
    assert code == 1 and "not-locked" in out


def test_since_until_limit_the_events_verified(store: Path, keys: Path) -> None:
    code, out, _ = verify(
        store, keys, "--json", "--since", "2026-01-01T00:00:06Z", "--until", "2026-01-01T00:00:16Z"
    )
    assert code == 0
    verified = json.loads(out)["events_verified"]
    assert 0 < verified < 5000


def test_prove_and_verify_proof(store: Path, keys: Path, tmp_path: Path) -> None:
    proof_path = tmp_path / "proof.json"
    code, _, err = cli(
        "prove", f"file://{store}", "synth-0-0001-0000001234", "--out", str(proof_path)
    )
    assert code == 0, err
    proof = json.loads(proof_path.read_text())
    assert proof["seq"] == 1234 and proof["stream"] == "synth-0-0001"
    pub = str(keys / "signing.pub")
    code, out, _ = cli("verify-proof", str(proof_path), "--public-key", pub)
    assert code == 0 and out.startswith("PASS")
    # A changed event no longer matches the signed root.
    proof["line"] = proof["line"].replace('"outcome":"success"', '"outcome":"failure"')
    proof["line"] = proof["line"].replace('"kind":"user"', '"kind":"system"')
    proof_path.write_text(json.dumps(proof))
    code, out, _ = cli("verify-proof", str(proof_path), "--public-key", pub)
    assert code == 1 and out.startswith("FAIL")
    # Another key did not sign the checkpoint.
    other = tmp_path / "other"
    cli("keys", "generate", "--out", str(other))
    cli("prove", f"file://{store}", "synth-0-0001-0000001234", "--out", str(proof_path))
    code, out, _ = cli("verify-proof", str(proof_path), "--public-key", str(other / "signing.pub"))
    assert code == 1 and "not by the given key" in out
    code, _, err = cli("prove", f"file://{store}", "no-such-event")
    assert code == 1 and "no event" in err
    proof_path.write_text("{")
    assert cli("verify-proof", str(proof_path))[0] == 2


def test_planted_object_with_a_huge_number_is_reported_quickly(store: Path, keys: Path) -> None:
    stream_dir = sorted((store / "streams").iterdir())[0]
    (stream_dir / "000000" / "ckpt-999999999999.ckpt").write_bytes(b"x")
    (stream_dir / "999999").mkdir()
    (stream_dir / "999999" / "seg-999999999998-999999999999.jsonl").write_bytes(b"x\n")
    code, out, err = verify(store, keys)
    assert code == 1 and err == ""
    assert "checkpoints 7-999999999998 are missing" in out
    assert "epochs 1-999998 have no objects" in out


def test_keys_rotate_hands_the_streams_to_a_new_key(
    store: Path, keys: Path, tmp_path: Path
) -> None:
    from auditlock import sinks
    from auditlock.ledger.keys import Signer, load_private_key
    from auditlock.ledger.writer import StreamWriter

    new = tmp_path / "new"
    cli("keys", "generate", "--out", str(new))
    code, out, err = cli(
        "keys", "rotate", "--store", f"file://{store}",
        "--old", str(keys / "signing.key"), "--new", str(new / "signing.pub"),
    )  # fmt: skip
    assert code == 0, err
    assert "keys/rotations/" in out
    dest = sinks.open(f"file://{store}", fsync=False)
    writer = StreamWriter.resume(
        dest, "synth-0-0000", Signer(load_private_key(new / "signing.key")), retention=None
    )
    writer.store(writer.close())
    # Trust anchored to the OLD key still verifies the checkpoint signed by the new one.
    code, out, _ = verify(store, keys)
    assert code == 0, out
    assert "synth-0-0000: closed, 2 epoch(s)" in out


def test_synth_with_sparse_events_writes_heartbeats_and_verifies(
    tmp_path: Path, keys: Path
) -> None:
    root = tmp_path / "sparse"
    code, _, err = cli(
        "synth", "--store", f"file://{root}", "--key", str(keys / "signing.key"),
        "--events", "40", "--interval-ms", "150000", "--segment-events", "7", "--no-fsync",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = verify(root, keys, "--json")
    assert code == 0, out
    assert json.loads(out)["checkpoints_verified"] > 40 * 2  # heartbeats between events


def test_a_command_imports_only_its_own_module() -> None:
    """`auditlock query ...` builds only query's parser: the operator's YAML and asyncio
    are not imported (they cost a repeated query a tenth of its time); a command whose
    name is not a module's (`verify-evidence`) still finds its parser."""
    import subprocess
    import sys

    probe = (
        "import sys; from auditlock.cli.main import build_parser; build_parser('query'); "
        "print(sorted({'yaml', 'asyncio', 'kopf'} & set(sys.modules))); "
        "args = ['verify-evidence', 'x.tar.gz', '--public-key', 'k.pem']; "
        "print(build_parser(args[0]).parse_args(args).command)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "verify-evidence"], out
