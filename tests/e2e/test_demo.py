"""The README's main command (`make demo` = scripts/demo.py) runs and leaves what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.auditlock_child import run_auditlock

ROOT = Path(__file__).resolve().parents[2]


def _demo(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def _verify(out: Path) -> subprocess.CompletedProcess[str]:
    return run_auditlock(
        "verify", f"file://{out / 'trail'}", "--public-key", str(out / "orders.pub.pem")
    )


def test_demo_runs_the_whole_chain_and_leaves_a_verifiable_trail(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _demo(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for step in ("Ready", "admitted with auditlock-collector", "PASS", "AccessDenied",
                 "verify exits 1", "certified by the operator's root key",
                 "holds 0 private keys"):  # fmt: skip
        assert step in result.stdout, f"the narration lacks {step!r}"
    assert json.loads((out / "report.json").read_text())["mode"] == "cluster"
    assert "verify" in (out / "report.md").read_text()
    assert _verify(out).returncode == 0


def test_demo_falls_back_to_file_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _demo(out, KUBEBUILDER_ASSETS=str(tmp_path / "no-such-assets"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "not available" in result.stdout and "not WORM" in result.stdout
    assert json.loads((out / "report.json").read_text())["mode"] == "file"
    assert _verify(out).returncode == 0


@pytest.fixture(autouse=True)
def _no_sidecar_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AUDITLOCK_SIDECAR__"):
            monkeypatch.delenv(key)
