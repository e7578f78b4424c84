"""`python -m auditlock ...` from this source tree as a child process: run to its end with
its output captured, or running beside the test with its output in a log file (never left
running when the block that started it ends)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(extra or {})}


def run_auditlock(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`auditlock *args` to its end (`env` over this process's environment): its exit
    code, stdout and stderr as text; a non-zero exit is the caller's to judge."""
    return subprocess.run(
        [sys.executable, "-m", "auditlock", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(env),
        timeout=timeout,
        check=False,
    )


@contextmanager
def auditlock_child(
    args: list[str], log_path: Path, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`auditlock *args` writing to `log_path`; a child still running when the block ends
    gets SIGTERM, then SIGKILL after 20 s."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditlock", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=_env(env),
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
