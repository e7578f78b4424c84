"""A full spool on a real collector: records that do not fit wait without spinning, one
that can never fit is refused at once, the full state clears when space returns.

Shipping is stalled for real: the file:// destination lives on a small tmpfs that is
filled up (uploads fail and are retried), so spooled records are not released until
the filler is removed. The spool (1 MiB) is smaller than a Forward frame (8 MiB).
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

from auditlock.sidecar.sources.forward import protocol
from tests.helpers.http_intake import padded, post_bytes
from tests.servers.disk_faults import fill, small_tmpfs, unfill
from tests.servers.sidecar import (
    SidecarProcess,
    make_config,
    sidecar_process,
    stored_ledger,
    wait_for,
)

SPOOL_BYTES = 1024 * 1024


def config_for(workdir: Path, **extra: Any) -> dict[str, Any]:
    return make_config(
        workdir,
        f"file://{workdir}/store/trail",
        ports=True,
        spool={"max_bytes": SPOOL_BYTES, "segment_bytes": 256 * 1024},
        delivery={"retry_initial_seconds": 0.1, "retry_max_seconds": 0.5},
        **extra,
    )


def chunk(first: int, count: int, pad: int, name: str) -> bytes:
    now = time.time_ns()
    entries = b"".join(
        msgpack.packb([protocol.pack_event_time(now), padded(n, pad)])
        for n in range(first, first + count)
    )
    return bytes(msgpack.packb(["app.data", entries, {"chunk": name}]))


def send(port: int, frame: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(frame)
    return sock


def answer(sock: socket.socket, timeout: float) -> Any:
    """The ack on a connection, None when it was closed without one."""
    sock.settimeout(timeout)
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        for message in unpacker:
            return message
        data = sock.recv(4096)
        if not data:
            return None
        unpacker.feed(data)


def post(port: int, n: int, pad: int) -> tuple[int, str]:
    body = json.dumps(padded(n, pad), separators=(",", ":")).encode()
    status, answer, _ = post_bytes(port, body)
    return status, answer.decode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(sidecar: SidecarProcess, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{sidecar.health_url}{path}", timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def stall_destination(store: Path) -> None:
    fill(store, leave=0)


@contextmanager
def waiting_for_room(
    tmp_path: Path, config: dict[str, Any]
) -> Iterator[tuple[SidecarProcess, Path, socket.socket, socket.socket]]:
    """A collector whose destination is full: a first chunk acked into the spool, and a
    second (600 KB that do not fit now, but will) whose connection waits without an ack."""
    with (
        small_tmpfs(tmp_path / "store", 8 * 1024 * 1024) as store,
        sidecar_process(tmp_path, config) as sidecar,
    ):
        sidecar.start()
        stall_destination(store)
        first = send(sidecar.forward_port, chunk(0, 500, 800, "c-first"))
        assert answer(first, 10) == {"ack": "c-first"}
        waiting = send(sidecar.forward_port, chunk(1000, 500, 800, "c-waiting"))
        yield sidecar, store, first, waiting


def test_records_that_do_not_fit_wait_quietly_and_one_that_never_fits_is_refused(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    with waiting_for_room(tmp_path, config) as (sidecar, store, first, waiting):
        time.sleep(0.5)
        before = cpu_seconds(sidecar.pid)
        time.sleep(3.0)
        used = cpu_seconds(sidecar.pid) - before
        print(f"CPU while a record waits for room: {used:.2f}s in 3s")
        assert used < 0.25, "the collector spins while it waits"
        assert health(sidecar, "/healthz")[0] == 200
        # A record larger than the whole spool can never be stored: refused at once.
        never = send(sidecar.forward_port, chunk(5000, 1000, 1200, "c-never"))
        assert answer(never, 10) is None
        assert "too_large_for_spool" in sidecar.metrics()
        assert "can never be spooled" in sidecar.log_path.read_text()
        status, text = post(sidecar.http_port, 6999, 1_200_000)  # larger than the spool
        assert status == 413 and "can never be spooled" in text
        # One HTTP event larger than the free space: 503, without shutting out small ones.
        status, text = post(sidecar.http_port, 7000, 500_000)
        assert status == 503 and "spool full" in text
        assert post(sidecar.http_port, 7001, 10)[0] == 202
        status, text = health(sidecar, "/readyz")
        assert status == 200 and "spool full" not in text
        unfill(store)  # shipping resumes and releases: the waiting chunk goes in
        assert answer(waiting, 30) == {"ack": "c-waiting"}
        wait_for(lambda: post(sidecar.http_port, 7002, 500_000)[0] == 202, 30, "room again")
        assert health(sidecar, "/readyz") == (200, "ready\n")
        assert sidecar.metric("auditlock_sidecar_spool_fill_ratio") < 1
        for sock in (first, waiting, never):
            sock.close()
        assert sidecar.terminate() == 0, sidecar.tail()
        stored = stored_ledger(config)  # on the tmpfs: read it now
        numbers = sorted(e["details"]["n"] for e in stored.events)
        assert numbers == [*range(500), *range(1000, 1500), 7001, 7002]


def test_sigterm_while_a_record_waits_for_room_stops_the_collector(tmp_path: Path) -> None:
    config = config_for(tmp_path, shutdown_grace_seconds=3)
    with waiting_for_room(tmp_path, config) as (sidecar, _store, first, waiting):
        time.sleep(1.0)
        assert health(sidecar, "/healthz")[0] == 200
        started = time.monotonic()
        assert sidecar.proc is not None
        sidecar.proc.terminate()
        code = sidecar.proc.wait(20)
        assert time.monotonic() - started < 15
        assert code == 1  # the destination is down: the spool keeps what was acknowledged
        assert answer(waiting, 5) is None  # never acknowledged
        first.close()
        waiting.close()
