"""What every server process a test starts shares: a free 127.0.0.1 port (picked again
when another process takes it first), a process group of its own writing to a log file,
a wait until it answers (failing with its log's tail when it exits or stays silent), a
stop that signals the whole group, a context manager that always stops it, and its log
attached to a failed test's report (a pytest plugin, listed in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import pytest

from tests.servers.kube_controlplane import _die_with_parent

if TYPE_CHECKING:
    from auditlock.sinks import Destination


class ServerStartError(RuntimeError):
    """A test server could not start; the message names the binary and its log file."""


def free_ports(count: int) -> list[int]:
    """Distinct ports free right now on 127.0.0.1 (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ManagedServer:
    label: ClassVar[str]  # names the server in its errors and in a failed test's report
    stop_timeout: ClassVar[float] = 10.0
    _proc: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM to the whole process group; SIGKILL when it outlives `stop_timeout`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(self.stop_timeout)

    def _launch(
        self, argv: list[str], *, cwd: Path | None = None, die_with_parent: bool = False
    ) -> None:
        """Run `argv` in a process group of its own (so stop() reaches its children),
        its output appended to the log."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                # The death signal follows the starting thread: only the main thread's.
                preexec_fn=(
                    _die_with_parent
                    if die_with_parent and threading.current_thread() is threading.main_thread()
                    else None
                ),
            )

    def _wait_ready(
        self, ready: Callable[[], bool], where: str, timeout: float, *, poll: float = 0.05
    ) -> None:
        """Call `ready` until it is true; fail (and stop) when the process exits first or
        `timeout` seconds pass. An exception from `ready` means "not up yet"."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise ServerStartError(
                    f"{self.label} exited with code {code} while starting; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if ready():
                    return
            except Exception as exc:  # not listening yet: connection refused, 503, ...
                last = exc
            time.sleep(poll)
        self.stop()
        raise ServerStartError(
            f"{self.label} did not become ready on {where} within {timeout:.0f} s "
            f"(last error: {last}); log {self.log_path}:\n{log_tail(self.log_path)}"
        )

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


class PortServer(ManagedServer):
    """A server on one port: `port`, or a free one picked at start."""

    port: int

    def start(self, timeout: float = 30.0) -> None:
        """Start on `port`, or on a free port; if another process grabs that port before
        the server binds it, pick again."""
        picked_here = not self.port
        for attempt in range(3):
            if picked_here:
                self.port = free_ports(1)[0]
            try:
                self._start_once(timeout)
                return
            except ServerStartError as exc:
                if not (picked_here and "already in use" in str(exc) and attempt < 2):
                    raise

    def _start_once(self, timeout: float) -> None:
        raise NotImplementedError


class ObjectStoreServer:
    """A storage server auditlock's sinks write to (`url_scheme`://bucket/prefix)."""

    url_scheme: ClassVar[str]

    def destination_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def make_bucket(self) -> str:
        raise NotImplementedError

    def destination(self, bucket: str, prefix: str = "trail", **extra: Any) -> Destination:
        """`auditlock.sinks.open` on `bucket`/`prefix` of this server."""
        from auditlock import sinks

        url = f"{self.url_scheme}://{bucket}/{prefix}"
        return sinks.open(url, **self.destination_options(), **extra)


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
