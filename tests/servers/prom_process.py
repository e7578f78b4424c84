"""What Prometheus and Alertmanager share as test servers: a binary from Debian's packages
(scripts/bootstrap.d/40-alerting.sh installs them), a YAML config file it reloads on
`POST /-/reload`, readiness on `GET /-/ready`, one free 127.0.0.1 port, a log file, and
a process that dies with the test session (PR_SET_PDEATHSIG, as the control plane's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from tests.servers.managed import PortServer, ServerStartError


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
class PromProcess(PortServer):
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

    def own_flags(self) -> list[str]:
        """The flags this server needs beyond its config file, port and log level."""
        raise NotImplementedError

    def _start_once(self, timeout: float) -> None:
        binary = debian_binary(self.binary_name, self.binary_env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        argv = [
            str(binary),
            f"--config.file={self.config_path}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            *self.own_flags(),
        ]
        self._launch(argv, die_with_parent=True)
        self._wait_ready(self._ready, self.url, timeout)

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
            return bool(r.status == 200)

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
