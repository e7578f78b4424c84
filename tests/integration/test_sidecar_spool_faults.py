"""The collector process under spool disk faults: every acknowledged event is in the
verified ledger exactly once, and no event the client was refused.

The disk fails for real: RLIMIT_FSIZE set in the child before exec (writes past it fail
with EFBIG, lifted again with prlimit), or a small tmpfs filled up (ENOSPC, freed
again). Clients: HTTP (202 = acknowledged, 503 = refused, never resent) and Forward
with chunk acks, retransmitting a chunk until it is acknowledged, as Fluentd does.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest

from auditlock.sidecar.sources.forward import protocol
from tests.servers.disk_faults import (
    fill,
    fsize_limit,
    lift_fsize_limit,
    small_tmpfs,
    unfill,
)
from tests.servers.sidecar import (
    SidecarProcess,
    cli_verify,
    make_config,
    sidecar_process,
    stored_ledger,
    wait_for,
)

FSIZE_LIMIT = 256 * 1024


def event(n: int, source: str) -> dict[str, Any]:
    return {
        "category": "data",
        "action": "write",
        "actor": "load",
        "target": "t",
        "n": n,
        "via": source,
        "pad": "p" * 200,
    }


class HttpSender:
    """One batch of 5 events per request; a refused batch is never resent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: list[int] = []
        self.refused: list[int] = []
        self.other: list[tuple[int, str]] = []
        self.next = 0

    def send_one(self) -> None:
        ns = list(range(self.next, self.next + 5))
        self.next += 5
        body = json.dumps([event(n, "http") for n in ns]).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/events", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        if status == 202:
            self.acked.extend(ns)
        elif status == 503:
            assert "spool write failed" in text or "spool" in text, text
            self.refused.extend(ns)
        else:
            self.other.append((status, text))


class ForwardSender:
    """PackedForward chunks of 5 events with acks, retransmitted until acknowledged."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: list[int] = []
        self.next = 0
        self.sock: socket.socket | None = None
        self.unpacker = msgpack.Unpacker(raw=False)

    def send_one(self, stop: threading.Event) -> None:
        ns = list(range(self.next, self.next + 5))
        self.next += 5
        chunk = f"chunk-{ns[0]}"
        now = time.time_ns()
        entries = b"".join(
            msgpack.packb([protocol.pack_event_time(now), event(n, "forward")]) for n in ns
        )
        frame = msgpack.packb(["app.data", entries, {"chunk": chunk, "size": 5}])
        while True:
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
                    self.unpacker = msgpack.Unpacker(raw=False)
                self.sock.sendall(frame)
                while True:
                    for message in self.unpacker:
                        if message == {"ack": chunk}:
                            self.acked.extend(ns)
                            return
                    data = self.sock.recv(4096)
                    if not data:
                        raise ConnectionError("closed")
                    self.unpacker.feed(data)
            except OSError:
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
                if stop.is_set():
                    return
                time.sleep(0.1)


def run_senders(
    sidecar: SidecarProcess, stop: threading.Event
) -> tuple[HttpSender, ForwardSender, list[threading.Thread]]:
    http = HttpSender(sidecar.http_port)
    forward = ForwardSender(sidecar.forward_port)

    def loop(send: Any) -> None:
        while not stop.is_set():
            send()
            time.sleep(0.005)

    threads = [
        threading.Thread(target=loop, args=(http.send_one,), daemon=True),
        threading.Thread(target=loop, args=(lambda: forward.send_one(stop),), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return http, forward, threads


def check_ledger(
    config: dict[str, Any], workdir: Path, http: HttpSender, forward: ForwardSender
) -> None:
    events, report = stored_ledger(config)
    seen = Counter((e["event"]["details"]["via"], e["event"]["details"]["n"]) for e in events)
    twice = [key for key, count in seen.items() if count > 1]
    assert not twice, f"stored twice: {twice[:10]}"
    assert {n for via, n in seen if via == "http"} == set(http.acked)
    assert not {n for via, n in seen if via == "http"} & set(http.refused)
    assert {n for via, n in seen if via == "forward"} == set(forward.acked)
    assert report.events_verified == len(http.acked) + len(forward.acked)
    result = cli_verify(config["destination"]["url"], workdir / "key.pub.pem")
    if result is not None:
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("fault", ["efbig", "enospc"])
def test_the_spool_disk_fails_and_recovers_and_no_acknowledged_event_is_lost(
    tmp_path: Path, fault: str
) -> None:
    config = make_config(
        tmp_path,
        ports=True,
        spool={"segment_bytes": 8 * 1024 * 1024},
        delivery={"batch_max_events": 100, "max_delay_seconds": 0.1},
    )
    spool_dir = tmp_path / "spool"
    with small_tmpfs(spool_dir, 4 * 1024 * 1024), sidecar_process(tmp_path, config) as sidecar:
        if fault == "efbig":
            sidecar.preexec_fn = fsize_limit(FSIZE_LIMIT)
        sidecar.start()
        stop = threading.Event()
        http, forward, threads = run_senders(sidecar, stop)
        if fault == "enospc":
            wait_for(lambda: len(http.acked) > 200, 30, "events before the fault")
            fill(spool_dir, leave=20_000)
        wait_for(lambda: http.refused, 60, "a refused HTTP request")
        errors = sidecar.metric("auditlock_sidecar_spool_write_errors_total")
        assert errors >= 1
        time.sleep(1.0)  # the disk stays broken a while; Forward acks wait meanwhile
        acked_during = len(forward.acked)
        if fault == "efbig":
            lift_fsize_limit(sidecar.pid)
        else:
            unfill(spool_dir)
        wait_for(lambda: len(http.acked) > len(http.refused) + 400, 60, "HTTP after recovery")
        wait_for(lambda: len(forward.acked) > acked_during + 100, 60, "Forward after recovery")
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not http.other, http.other[:3]
        assert sidecar.ready()
        assert sidecar.terminate() == 0, sidecar.tail()
    check_ledger(config, tmp_path, http, forward)
