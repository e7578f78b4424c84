"""The collector sidecar as a test server: in-process (fast) or as a real process.

`SidecarProcess` runs `python -m auditlock.sidecar --config FILE` on fixed free ports,
waits for /readyz, and can be stopped with SIGTERM or killed with SIGKILL and started
again on the same ports and spool. `ledger_events` reads back what reached the store
and `verify_ledger` runs the ledger's offline verifier (and `auditlock verify` when that
subcommand exists).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from auditlock.ledger.keys import generate, private_pem, public_pem

ROOT = Path(__file__).resolve().parents[2]


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` in Prometheus text whose labels include
    `labels` (all of its samples when none are given); 0 when there is none."""
    total = 0.0
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None or sample.group(1) != name:
            continue
        have = dict(_LABEL.findall(sample.group(2) or ""))
        if all(have.get(key) == value for key, value in labels.items()):
            total += float(sample.group(3))
    return total


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_config(
    workdir: Path,
    destination_url: str | None = None,
    *,
    ports: bool = False,
    **sections: Any,
) -> dict[str, Any]:
    """A sidecar config dict under `workdir` (key written there), file:// store by default."""
    workdir.mkdir(parents=True, exist_ok=True)
    key_path = workdir / "key.pem"
    if not key_path.exists():
        key = generate()
        key_path.write_bytes(private_pem(key))
        (workdir / "key.pub.pem").write_bytes(public_pem(key.public_key()))
    config: dict[str, Any] = {
        "destination": {"url": destination_url or f"file://{workdir}/store"},
        "stream": {"id": "shop_api-1", "signing_key_file": str(key_path)},
        "source": {"cluster": "test", "namespace": "shop", "pod": "api-1"},
        "sources": {
            "forward": {"port": free_port() if ports else 0},
            "http": {"port": free_port() if ports else 0},
        },
        "spool": {"dir": str(workdir / "spool")},
        "health": {"host": "127.0.0.1", "port": free_port() if ports else 0},
        "delivery": {"max_delay_seconds": 0.1},
        "shutdown_grace_seconds": 20,
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            _merge(config[section], values)
        else:
            config[section] = values
    return config


def s3_config(workdir: Path, seaweedfs: Any, **sections: Any) -> dict[str, Any]:
    """A config (fixed ports) that ships to a fresh Object Lock bucket on `seaweedfs`."""
    bucket = seaweedfs.make_bucket(object_lock=True)
    destination = {
        "retention_days": 1,
        "lock_mode": "Unlocked",
        "options": seaweedfs.destination_options(),
    }
    return make_config(
        workdir, f"s3://{bucket}/trail", ports=True, destination=destination, **sections
    )


def access_proxy_config(workdir: Path, upstream: str) -> tuple[dict[str, Any], int]:
    """A config (fixed ports) with the access proxy in front of `upstream`; its port."""
    port = free_port()
    proxy = {"enabled": True, "host": "127.0.0.1", "port": port, "upstream": upstream}
    return make_config(workdir, ports=True, sources={"access_proxy": proxy}), port


def _merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@asynccontextmanager
async def running_sidecar(config: dict[str, Any]) -> Any:
    """An in-process sidecar on the current event loop; stopped gracefully on exit."""
    from auditlock.sidecar.app import Sidecar
    from auditlock.sidecar.config import config_from_dict

    sidecar = Sidecar(config_from_dict(config, environ={}))
    await sidecar.start()
    try:
        yield sidecar
    finally:
        if sidecar.state == "running":
            await sidecar.stop()


def readyz(health_url: str) -> bool:
    """The collector at `health_url` answers /readyz with 200."""
    try:
        with urllib.request.urlopen(f"{health_url}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def wait_readyz(
    proc: subprocess.Popen[bytes], health_url: str, tail: Callable[[], str], timeout: float
) -> None:
    """Wait until the collector `proc` is ready; fail with `tail()` (its log's end) if it
    exits first (RuntimeError) or is not ready within `timeout` seconds (TimeoutError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited with {proc.returncode}:\n{tail()}")
        if readyz(health_url):
            return
        time.sleep(0.02)
    raise TimeoutError(f"collector not ready after {timeout}s:\n{tail()}")


class SidecarProcess:
    """The sidecar as a real child process (for SIGTERM / SIGKILL tests)."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = config
        self.config_path = workdir / "sidecar.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = workdir / "sidecar.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Runs in the child before exec (e.g. resource limits for disk-fault tests).
        self.preexec_fn: Callable[[], None] | None = None

    @property
    def forward_port(self) -> int:
        return int(self.config["sources"]["forward"]["port"])

    @property
    def http_port(self) -> int:
        return int(self.config["sources"]["http"]["port"])

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.config['health']['port']}"

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait for /readyz; returns seconds from spawn to ready."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auditlock.sidecar", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("AUDITLOCK_SIDECAR__")},
            preexec_fn=self.preexec_fn,
        )
        log.close()
        self.starts += 1
        try:
            wait_readyz(self.proc, self.health_url, self.tail, timeout)
        except TimeoutError:
            self.kill()
            raise
        return time.monotonic() - started

    def ready(self) -> bool:
        return readyz(self.health_url)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.health_url}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
            return text

    def metric(self, name: str, **labels: str) -> float:
        """`metric_value` of this collector's /metrics."""
        return metric_value(self.metrics(), name, **labels)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss(self) -> int:
        """The collector's peak resident memory so far (VmHWM), in bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        (line,) = (x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the collector has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


MEMORY_LIMIT = 128 * 1024 * 1024  # the collector container's default memory limit


def terminate_promptly(sidecar: SidecarProcess, within: float = 5.0) -> int:
    """SIGTERM; asserts a clean exit within `within` seconds and a peak RSS under the
    container's default memory limit. Returns that peak (bytes)."""
    peak = sidecar.peak_rss()
    started = time.monotonic()
    code = sidecar.terminate(timeout=60)
    exit_after = time.monotonic() - started
    assert code == 0, sidecar.tail()
    assert exit_after < within, f"exit took {exit_after:.1f}s after SIGTERM"
    assert peak < MEMORY_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
    return peak


@contextmanager
def sidecar_process(workdir: Path, config: dict[str, Any]) -> Iterator[SidecarProcess]:
    proc = SidecarProcess(workdir, config)
    try:
        yield proc
    finally:
        proc.kill()


@contextmanager
def module_collector(workdir: Path, **sections: Any) -> Iterator[SidecarProcess]:
    """A started collector process on its own ports under `workdir` (a module's shared one:
    `tmp_path_factory.mktemp(...)`), `sections` over make_config's defaults."""
    with sidecar_process(workdir, make_config(workdir, ports=True, **sections)) as proc:
        proc.start()
        yield proc


def open_store(url: str, **options: Any) -> Any:
    from auditlock import sinks

    return sinks.open(url, **options)


def ledger_events(store: Any) -> list[dict[str, Any]]:
    """Every event line in every segment of the store, in (stream, epoch, seq) order."""
    from auditlock.ledger.segment import decode_segment

    lines: list[dict[str, Any]] = []
    for name in store.list("streams/"):
        if "/seg-" not in name:
            continue
        for line in decode_segment(store.get(name), compressed=name.endswith(".gz")):
            lines.append(json.loads(line))
    lines.sort(key=lambda e: (e["stream"], e["epoch"], e["seq"]))
    return lines


def verify_ledger(store: Any, public_key_path: Path) -> Any:
    """The ledger's verifier over the whole store; asserts PASS and returns the report."""
    from auditlock.ledger.keys import load_public_key
    from auditlock.ledger.verify import VerifyOptions, verify

    report = verify(store, VerifyOptions(public_keys=[load_public_key(public_key_path)]))
    assert report.ok, report.summary()
    return report


class StoredLedger(NamedTuple):
    """What reached a collector's destination, and the verifier's report over it."""

    lines: list[dict[str, Any]]
    report: Any

    @property
    def events(self) -> list[dict[str, Any]]:
        return [line["event"] for line in self.lines]


def public_key_path(config: dict[str, Any]) -> Path:
    """The public key `make_config` wrote beside the collector's signing key."""
    return Path(config["stream"]["signing_key_file"]).with_name("key.pub.pem")


def stored_ledger(config: dict[str, Any], **store_options: Any) -> StoredLedger:
    """Every line at `config`'s destination, after the verifier passed the whole store
    with the collector's public key (asserts PASS)."""
    destination = config["destination"]
    store = open_store(destination["url"], **(destination.get("options", {}) | store_options))
    report = verify_ledger(store, public_key_path(config))
    return StoredLedger(ledger_events(store), report)


def cli_verify(url: str, public_key_path: Path) -> subprocess.CompletedProcess[str] | None:
    """`auditlock verify URL --public-key KEY` when the subcommand exists, else None."""
    from auditlock.cli.main import SUBCOMMAND_MODULES

    if "verify" not in SUBCOMMAND_MODULES:
        return None
    return subprocess.run(
        [sys.executable, "-m", "auditlock", "verify", url, "--public-key", str(public_key_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
