"""An evidence package of a trail signed by per-pod keys checks out offline with the
root key that certified them (FORMAT.md section 9), through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from auditlock import sinks
from auditlock.ledger.certificate import Subject, publish_certificate
from auditlock.ledger.keys import Signer, generate, public_pem
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.writer import StreamWriter
from tests.helpers.cli import cli

SECOND = 1_000_000_000


def test_a_per_pod_trail_packs_and_checks_with_the_root_key(tmp_path: Path) -> None:
    root = Signer(generate())
    dest = sinks.open(f"file://{tmp_path / 'store'}")
    for pod in ("api-0", "api-1"):
        stream = f"c1_team_{pod}"
        key = Signer(generate())
        publish_certificate(
            dest, root, Subject("c1", "team", pod, f"uid-{pod}", stream), key.public,
            not_before_ns=DEFAULT_START_NS - SECOND, not_after_ns=DEFAULT_START_NS + 3600 * SECOND,
            retention=None,
        )  # fmt: skip
        writer = StreamWriter.resume(
            dest, stream, key, retention=None, clock=SimulatedClock(DEFAULT_START_NS)
        )
        for _, event in synthetic_events(stream, 20, interval_ns=SECOND):
            writer.append(event)
        writer.store(writer.seal())
        writer.store(writer.close())
    root_pub = tmp_path / "root.pub"
    root_pub.write_bytes(public_pem(root.public))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    package = tmp_path / "evidence.tar.gz"
    code, text, _ = cli(
        "evidence", f"file://{tmp_path / 'store'}", "--public-key", str(root_pub),
        "--cache-dir", str(cache), "--since", "2025-12-31T23:00:00Z",
        "--until", "2026-01-01T01:00:00Z", "--sample", "5", "--seed", "s", "--out",
        str(package), "--json",
    )  # fmt: skip
    assert code == 0, text
    code, text, _ = cli("verify-evidence", str(package), "--public-key", str(root_pub), "--json")
    assert code == 0, text
    other = tmp_path / "other.pub"
    other.write_bytes(public_pem(generate().public_key()))
    code, text, _ = cli("verify-evidence", str(package), "--public-key", str(other), "--json")
    assert code == 1 and "untrusted-key" in {f["code"] for f in json.loads(text)["findings"]}
