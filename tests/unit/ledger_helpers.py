"""Small real ledgers on file:// for ledger tests, and helpers to tamper with them."""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditlock import sinks
from auditlock.ledger.keys import Signer, generate, private_pem, public_pem
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.writer import StreamWriter
from auditlock.sinks.base import Destination
from tests.helpers.cli import cli

MINUTE_NS = 60 * 1_000_000_000


@dataclass
class Ledger:
    root: Path
    url: str
    dest: Destination
    signer: Signer
    pub_path: Path
    key_path: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def writer(self, stream: str, **options: Any) -> StreamWriter:
        """A writer of `stream` into this ledger, without retention; `options` go to
        `StreamWriter.resume` (by default the ledger's key and a simulated clock at
        2026-01-01T00:00:00Z)."""
        options.setdefault("signing_key", self.signer)
        options.setdefault("clock", SimulatedClock(DEFAULT_START_NS))
        return StreamWriter.resume(self.dest, stream, retention=None, **options)

    def names(self, prefix: str = "") -> list[str]:
        return list(self.dest.list(prefix))

    def segments(self, stream: str) -> list[str]:
        return [n for n in self.names(f"streams/{stream}/") if "/seg-" in n]

    def checkpoints(self, stream: str) -> list[str]:
        return [n for n in self.names(f"streams/{stream}/") if "/ckpt-" in n]

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        """Replace or create an object the way an attacker with write access would."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.chmod(path, 0o644)
        path.write_bytes(data)

    def delete(self, name: str) -> None:
        self.path(name).unlink()

    def verify(self, *extra: str, key: bool = True) -> tuple[int, str]:
        code, out, _ = cli(
            "verify", self.url, *(["--public-key", str(self.pub_path)] if key else []), *extra
        )
        return code, out


def make_signer(seed: int | None = None) -> Signer:
    if seed is None:
        return Signer(generate())
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Signer(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def new_ledger(tmp: Path, signer: Signer | None = None) -> Ledger:
    signer = signer or make_signer()
    root = tmp / "store"
    key_dir = tmp / "keys"
    key_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = key_dir / "signing.key", key_dir / "signing.pub"
    key_path.write_bytes(private_pem(signer.private))
    pub_path.write_bytes(public_pem(signer.public))
    url = f"file://{root}"
    return Ledger(root, url, sinks.open(url, fsync=False), signer, pub_path, key_path)


def write_stream(
    ledger: Ledger,
    stream: str,
    *,
    events: int = 60,
    per_segment: int = 10,
    quiet_minutes: int = 0,
    close: bool = True,
    start_ns: int = DEFAULT_START_NS,
) -> StreamWriter:
    """Events every second, sealed per_segment at a time; then (optionally) a quiet period
    with only heartbeats; then as many events again; then close."""
    clock = SimulatedClock(start_ns)
    writer = ledger.writer(stream, clock=clock)
    writer.store(writer.heartbeat())
    items = list(synthetic_events(stream, events, start_ns=start_ns, interval_ns=1_000_000_000))
    half = len(items) // 2 if quiet_minutes else len(items)
    for i, (when, event) in enumerate(items):
        if i == half:
            quiet_end = clock.now + quiet_minutes * MINUTE_NS
            while clock.now + MINUTE_NS <= quiet_end:
                clock.now += MINUTE_NS
                writer.store(writer.heartbeat())
        clock.now = max(clock.now, when + (quiet_minutes * MINUTE_NS if i >= half else 0))
        event = dict(event, time=_fmt(clock.now))
        writer.append(event)
        if writer.pending_events >= per_segment:
            writer.store(writer.seal())
    if close:
        clock.now += 1_000_000_000
        writer.store(writer.close())
    return writer


def app_and_other(
    tmp_path: Path, app: tuple[int, int] = (60, 10), other: tuple[int, int] = (30, 10)
) -> Ledger:
    """A new ledger with two closed streams, "app" and "other", of (events, per_segment)
    each."""
    led = new_ledger(tmp_path)
    write_stream(led, "app", events=app[0], per_segment=app[1])
    write_stream(led, "other", events=other[0], per_segment=other[1])
    return led


def _fmt(ns: int) -> str:
    from auditlock.ledger.timestamps import format_ns

    return format_ns(ns)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def join_lines(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"
