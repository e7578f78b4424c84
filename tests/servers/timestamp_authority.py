"""sigstore's timestamp-authority (`timestamp-server serve`, Go), a second real RFC 3161
TSA beside OpenSSL's (tests/servers/tsa.py), on 127.0.0.1 with its in-memory signer: a
fresh root, intermediate and leaf certificate (critical id-kp-timeStamping) at each
start, served on /api/v1/timestamp/certchain. Built from its Go module by
scripts/bootstrap.d/60-timestamp-authority.sh into ~/.cache/auditlock/bin.

timestamp-server always serves its Prometheus metrics on port 2112 of every interface
(v2.1.3 has no flag for it) and exits when that port is taken, so one runs at a time on
a machine: a second start fails with the log's "address already in use".

    with SigstoreTsa.started(tmp_path) as tsa:
        tsa.url, tsa.chain_pem
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.managed import PortServer, ServerStartError

VERSION = "v2.1.3"  # scripts/bootstrap.d/60-timestamp-authority.sh builds this one
CACHE = Path(os.environ.get("AUDITLOCK_CACHE") or Path.home() / ".cache" / "auditlock")
BINARY = CACHE / "bin" / f"timestamp-server-{VERSION}"


class SigstoreTsa(PortServer):
    label = "timestamp-server"

    def __init__(self, workdir: Path, port: int = 0) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self._proc = None
        self.chain_pem = b""  # leaf, intermediate, root (PEM), as the server serves it

    @property
    def log_path(self) -> Path:
        return self.workdir / "timestamp-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/timestamp"

    def _start_once(self, timeout: float) -> None:
        if not BINARY.is_file():
            raise ServerStartError(
                f"{BINARY} is missing: run scripts/bootstrap.d/60-timestamp-authority.sh"
            )
        self._launch(
            [
                str(BINARY), "serve", "--host=127.0.0.1", f"--port={self.port}",
                "--timestamp-signer=memory", "--disable-ntp-monitoring", "--log-type=prod",
            ],
            die_with_parent=True,
        )  # fmt: skip
        self._wait_ready(self._read_chain, f"127.0.0.1:{self.port}", timeout)

    def _read_chain(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/certchain", timeout=2) as answer:
            self.chain_pem = answer.read()
        return b"-----BEGIN CERTIFICATE-----" in self.chain_pem


@pytest.fixture(scope="session")
def sigstore_tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigstoreTsa]:
    """One sigstore timestamp-server per session (port 2112 allows no second one)."""
    with SigstoreTsa.started(tmp_path_factory.mktemp("sigstore-tsa")) as tsa:
        yield tsa
