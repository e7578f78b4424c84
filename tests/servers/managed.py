"""What every storage test server shares: its process id while running, and a context
manager that starts it and always stops it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Self


class ManagedServer:
    _proc: subprocess.Popen[bytes] | None

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
