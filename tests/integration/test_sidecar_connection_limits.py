"""Connection limits on a real collector process, with real sockets: a cap per listener,
header, body, frame, idle and handshake timeouts, each counted; the health listener keeps
answering while 1,100 connections hit the collector under a 1,024 file-descriptor limit;
a bad chunked framing line is answered 400 (never an unhandled exception). Afterwards the
one valid event is in the verified ledger.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import resource
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from auditlock.sidecar.sources.forward.protocol import pack_event_time
from tests.servers.hostile_intake import peak_rss_mib, post
from tests.servers.sidecar import (
    SidecarProcess,
    make_config,
    module_collector,
    sidecar_process,
    stored_ledger,
)

T = 1_764_428_645
RECORD = {"category": "access", "action": "read", "actor": "ok", "target": "t"}


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before it closed the socket; fails if it stays open."""
    sock.settimeout(seconds)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def healthz(proc: SidecarProcess, timeout: float) -> int:
    with urllib.request.urlopen(f"{proc.health_url}/healthz", timeout=timeout) as answer:
        return int(answer.status)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    sources = {
        "forward": {
            "max_connections": 4,
            "idle_timeout_seconds": 1.0,
            "frame_timeout_seconds": 1.0,
        },
        "http": {
            "max_connections": 4,
            "header_timeout_seconds": 1.0,
            "body_timeout_seconds": 1.0,
            "idle_timeout_seconds": 1.0,
        },
    }
    with module_collector(tmp_path_factory.mktemp("limits"), sources=sources) as proc:
        yield proc


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_idle_and_unfinished_forward_connections_are_closed(limited: SidecarProcess) -> None:
    with connect(limited.forward_port) as idle:
        started = time.monotonic()
        assert closed_within(idle, 5) == b""
        assert time.monotonic() - started < 4
    frame = msgpack.packb(["app.access", [[T, RECORD]] * 100, {"chunk": "partial"}])
    with connect(limited.forward_port) as partial:
        partial.sendall(frame[: len(frame) // 2])  # then nothing: a stalled frame
        assert closed_within(partial, 5) == b""  # never acknowledged
    assert (
        limited.metric(
            "auditlock_sidecar_connections_timed_out_total", listener="forward", phase="idle"
        )
        >= 1
    )
    assert (
        limited.metric(
            "auditlock_sidecar_connections_timed_out_total", listener="forward", phase="frame"
        )
        == 1
    )


def test_slow_http_headers_body_and_idle_keep_alive_are_closed(limited: SidecarProcess) -> None:
    with connect(limited.http_port) as slow_headers:
        slow_headers.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        assert closed_within(slow_headers, 5).startswith(b"HTTP/1.1 408 ")
    with connect(limited.http_port) as slow_body:
        slow_body.sendall(b"POST /v1/events HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        assert closed_within(slow_body, 5).startswith(b"HTTP/1.1 408 ")
    with connect(limited.http_port) as keep_alive:
        body = json.dumps(RECORD | {"id": "http-ok"}).encode()
        keep_alive.sendall(
            b"POST /v1/events HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        answer = closed_within(keep_alive, 5)  # answered, then closed once idle
        assert answer.startswith(b"HTTP/1.1 202 "), answer
    for phase in ("header", "body", "idle"):
        assert (
            limited.metric(
                "auditlock_sidecar_connections_timed_out_total", listener="http", phase=phase
            )
            >= 1
        )


@pytest.mark.parametrize(
    "size_line",
    [b"-5", b"+5", b"0x5", b"5" * 20_000, b"ffffffffffffffffffff"],
    ids=["negative", "plus", "0x", "20-KB-line", "beyond-64-bits"],
)
def test_bad_chunk_size_lines_are_answered_400(limited: SidecarProcess, size_line: bytes) -> None:
    with connect(limited.http_port) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line[:100]
        )
        if len(size_line) > 100:
            with contextlib.suppress(OSError):
                sock.sendall(size_line[100:])
        with contextlib.suppress(OSError):
            sock.sendall(b"\r\nhello\r\n0\r\n\r\n")
        answer = closed_within(sock, 5)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_connections_over_the_cap_are_closed_at_once(limited: SidecarProcess) -> None:
    before = limited.metric("auditlock_sidecar_connections_refused_total", listener="forward")
    held = [connect(limited.forward_port) for _ in range(4)]
    try:
        time.sleep(0.2)
        with connect(limited.forward_port) as extra:
            assert closed_within(extra, 0.5) == b""
        assert (
            limited.metric("auditlock_sidecar_connections_refused_total", listener="forward")
            == before + 1
        )
    finally:
        for sock in held:
            sock.close()
    held = [connect(limited.http_port) for _ in range(4)]
    try:
        time.sleep(0.2)
        with connect(limited.http_port) as extra:
            assert closed_within(extra, 0.5).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()


def test_only_the_valid_event_is_in_the_verified_ledger(limited: SidecarProcess) -> None:
    log = limited.log_path.read_text()
    assert "Unhandled exception" not in log and "Traceback" not in log, limited.tail(40)
    assert limited.terminate() == 0
    assert [e["id"] for e in stored_ledger(limited.config).events] == ["http-ok"]


def test_unauthenticated_connections_get_a_handshake_deadline(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        ports=True,
        sources={"forward": {"shared_key": "k", "handshake_timeout_seconds": 1.0}},
    )
    with sidecar_process(tmp_path, config) as proc:
        proc.start()
        socks = [connect(proc.forward_port) for _ in range(20)]
        try:
            for sock in socks:
                helo = closed_within(sock, 5)  # HELO, then nothing from us: closed
                assert msgpack.unpackb(helo, raw=False)[0] == "HELO"
        finally:
            for sock in socks:
                sock.close()
        assert (
            proc.metric(
                "auditlock_sidecar_connections_timed_out_total",
                listener="forward",
                phase="handshake",
            )
            == 20
        )


def test_health_answers_while_1100_connections_hit_a_collector_with_1024_fds(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1300:
        pytest.skip(f"this test process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    config = make_config(tmp_path, ports=True)
    with sidecar_process(tmp_path, config) as proc:
        proc.start()
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (1024, 1024))
        flood: list[socket.socket] = []
        try:
            ports = [proc.forward_port, proc.http_port, int(config["health"]["port"])]
            for n in range(1100):
                with contextlib.suppress(OSError):
                    flood.append(connect(ports[n % 3]))
            time.sleep(3)  # longer than the health listener's 2 s header timeout
            assert healthz(proc, timeout=2) == 200
            assert (
                proc.metric("auditlock_sidecar_connections_refused_total", listener="forward") > 0
            )
            assert proc.metric("auditlock_sidecar_connections_refused_total", listener="http") > 0
            assert proc.metric("auditlock_sidecar_connections_refused_total", listener="health") > 0
            assert proc.metric("auditlock_sidecar_connections_open", listener="forward") <= 32
        finally:
            for sock in flood:
                sock.close()
        # Intake works again once the flood is gone.
        frame: Any = msgpack.packb(["app.access", T, RECORD, {"chunk": "after-flood"}])
        with connect(proc.forward_port) as sock:
            sock.sendall(frame)
            sock.settimeout(10)
            assert msgpack.unpackb(sock.recv(4096), raw=False) == {"ack": "after-flood"}


def test_unfinished_frames_on_many_connections_stay_within_the_memory_limit(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, ports=True, sources={"forward": {"frame_timeout_seconds": 5}})
    entry = msgpack.packb([T, RECORD])
    count = (7 * 1024 * 1024) // len(entry)
    # A Forward-mode message announcing more entries than are ever sent: 7 MiB each.
    partial = b"\x93" + msgpack.packb("app.access") + b"\xdd" + (count + 1).to_bytes(4, "big")
    partial += entry * count

    def send(sock: socket.socket) -> None:
        sock.settimeout(8)  # the collector stops reading once its buffer budget is used
        with contextlib.suppress(OSError):
            sock.sendall(partial)

    with sidecar_process(tmp_path, config) as proc:
        proc.start()
        socks = [connect(proc.forward_port) for _ in range(16)]
        try:
            threads = [threading.Thread(target=send, args=(sock,)) for sock in socks]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            peak = peak_rss_mib(proc.pid)
            assert peak < 128, f"peak RSS {peak:.0f} MiB"
            assert healthz(proc, timeout=2) == 200
            for sock in socks:  # none was acknowledged; each is closed by the frame timeout
                assert closed_within(sock, 10) == b""
        finally:
            for sock in socks:
                sock.close()
        # Each was closed: by the frame timeout, or (the one reading while the others
        # waited) when its message's events passed the per-message limit.
        timed_out = proc.metric(
            "auditlock_sidecar_connections_timed_out_total", listener="forward", phase="frame"
        )
        too_large = proc.metric(
            "auditlock_sidecar_forward_connections_closed_total", reason="too_large"
        )
        assert timed_out >= 1 and timed_out + too_large == 16
        frame: Any = msgpack.packb(["app.access", T, RECORD, {"chunk": "after"}])
        with connect(proc.forward_port) as sock:
            sock.sendall(frame)
            sock.settimeout(10)
            assert msgpack.unpackb(sock.recv(4096), raw=False) == {"ack": "after"}


def test_compressed_messages_on_many_connections_stay_within_the_memory_limit(
    tmp_path: Path,
) -> None:
    # A few KiB of gzip each, read within the budget at once, become 8 MiB of entries
    # whose events pass the per-message limit: decoded one connection at a time.
    entry = msgpack.packb([pack_event_time(T * 10**9), RECORD])
    blob = gzip.compress(entry * ((8 * 1024 * 1024 - 4096) // len(entry)), 9)
    config = make_config(tmp_path, ports=True)
    with sidecar_process(tmp_path, config) as proc:
        proc.start()

        def send(number: int) -> None:
            option = {"chunk": f"gz-{number}", "compressed": "gzip"}
            with connect(proc.forward_port) as sock:
                sock.sendall(msgpack.packb(["app.access", blob, option]))
                assert closed_within(sock, 60) == b""  # refused: too many events

        threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = peak_rss_mib(proc.pid)
        assert peak < 128, f"peak RSS {peak:.0f} MiB"
        assert (
            proc.metric("auditlock_sidecar_forward_connections_closed_total", reason="too_large")
            == 6
        )


def test_dense_http_requests_at_once_are_decoded_one_at_a_time(tmp_path: Path) -> None:
    # One event whose details hold 220,000 empty maps: 0.6 MiB of JSON, ~30 MiB decoded.
    maps = b"{}," * 220_000 + b"{}"
    body = b'[{"category":"access","action":"read","actor":"a","target":"t","details":'
    body += b'{"maps":[' + maps + b"]}}]"
    with sidecar_process(tmp_path, make_config(tmp_path, ports=True)) as proc:
        proc.start()
        assert post(proc.http_port, body)[0] == 202
        one = peak_rss_mib(proc.pid)
        codes: list[int] = []
        threads = [
            threading.Thread(target=lambda: codes.append(post(proc.http_port, body)[0]))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert codes == [202] * 4
        peak = peak_rss_mib(proc.pid)
        assert peak < one + 16, f"peak RSS {peak:.0f} MiB, {one:.0f} MiB after one request"
