"""What Prometheus and Alertmanager share as test servers: a binary from Debian's packages
(scripts/bootstrap.d/40-alerting.sh installs them), a YAML config file it reloads on
`POST /-/reload`, readiness on `GET /-/ready`, one free 127.0.0.1 port, a log file, and
a process that dies with the test session (PR_SET_PDEATHSIG, as the control plane's).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from tests.servers.kube_controlplane import _die_with_parent
from tests.servers.managed import ManagedServer, log_tail
from tests.servers.seaweedfs import ServerStartError, free_ports

START_TIMEOUT_S = 30.0


def debian_binary(name: str, env_var: str) -> Path:
    """`name` on PATH (Debian puts it in /usr/bin), or the file `env_var` names."""
    explicit = os.environ.get(env_var)
    if explicit:  # an explicit choice is never silently replaced by another binary
        if os.access(explicit, os.X_OK):
            return Path(explicit)
        raise ServerStartError(f"{env_var}={explicit} is not an executable file")
    found = shutil.which(name)
    if found is None:
        raise ServerStartError(
            f"{name} not found: run `bash scripts/bootstrap.d/40-alerting.sh` (Debian packages "
            f"prometheus and prometheus-alertmanager) or set {env_var}"
        )
    return Path(found)


@dataclass
class PromProcess(ManagedServer):
    """Subclasses name their binary and build their argv and config."""

    label: ClassVar[str]
    binary_name: ClassVar[str]
    binary_env: ClassVar[str]

    workdir: Path
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.binary_name}.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def argv(self, binary: Path) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
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
                if not (picked_here and "address already in use" in str(exc) and attempt < 2):
                    raise

    def _start_once(self, timeout: float) -> None:
        binary = debian_binary(self.binary_name, self.binary_env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(
                    _die_with_parent
                    if threading.current_thread() is threading.main_thread()
                    else None
                ),
            )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise ServerStartError(
                    f"{self.label} exited with code {code} while starting; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception as exc:  # not listening yet
                last = exc
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(
            f"{self.label} did not become ready on {self.url} within {timeout:.0f} s "
            f"(last error: {last}); log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        tmp.replace(self.config_path)

    def reload(self) -> None:
        """Write the config again and make the server load it (fails on a config the
        server refuses, with the server's own message)."""
        self.write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST", data=b"")
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"{self.label} refused its new config: {exc.read().decode(errors='replace')}"
            ) from exc

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.loads(r.read())

    def post_json(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method="POST",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            data = r.read()
        return json.loads(data) if data.strip() else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
