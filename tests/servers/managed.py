"""What every storage test server shares: its process id while running, a context
manager that starts it and always stops it, and its log attached to a failed test's
report (a pytest plugin, listed in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

import pytest


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ManagedServer:
    label: ClassVar[str]  # names the server in a failed test's report
    _proc: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The server process id while running (benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @classmethod
    @contextlib.contextmanager
    def started(cls, workdir: Path) -> Iterator[Self]:
        server = cls(workdir)  # type: ignore[call-arg]
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the log of each storage server a failed test used to its report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, ManagedServer):
                report.sections.append(
                    (f"{value.label} log {value.log_path}", log_tail(value.log_path, 80))
                )
