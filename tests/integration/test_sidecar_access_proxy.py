"""The access proxy in a real collector process, between curl and a real upstream process
(docs/threat-model.md, "Config-file capture and the access proxy").

Large bodies both ways must not raise the collector's peak memory, and each stored event
must carry the status the client actually received.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.servers.disk_faults import fill, small_tmpfs, unfill
from tests.servers.http_upstream import UpstreamProcess
from tests.servers.sidecar import (
    access_proxy_config,
    free_port,
    sidecar_process,
    stored_ledger,
    terminate_promptly,
)

MiB = 1024 * 1024


def curl(*args: str, stdin: Any = None) -> subprocess.Popen[str]:
    """curl printing its body, then a last line `<status> <bytes downloaded>`."""
    return subprocess.Popen(
        ["curl", "-sS", "--max-time", "120", "-w", "\n%{http_code} %{size_download}", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, int, int]:
    """(curl exit code, body, status, bytes downloaded)."""
    out, _ = proc.communicate(timeout=180)
    body, _, last = out.rpartition("\n")
    status, size = last.split()
    return proc.returncode, body, int(status), int(size)


def failures(metrics: str) -> dict[str, float]:
    return {
        m[1]: float(m[2])
        for m in re.finditer(
            r'^auditlock_sidecar_access_proxy_failures_total\{reason="(\w+)"\} (\S+)$',
            metrics,
            re.M,
        )
    }


def test_large_bodies_stream_and_each_event_has_the_status_sent(tmp_path: Path) -> None:
    payload = tmp_path / "60MiB.bin"
    data = hashlib.sha256(b"seed").digest() * (60 * MiB // 32)
    payload.write_bytes(data)
    expected = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    too_big = tmp_path / "70MiB.bin"
    too_big.write_bytes(data + data[: 10 * MiB])
    with UpstreamProcess(tmp_path) as upstream:
        config, proxy_port = access_proxy_config(tmp_path / "collector", upstream.url)
        proxy = f"http://127.0.0.1:{proxy_port}"
        with sidecar_process(tmp_path / "collector", config) as sidecar:
            sidecar.start(timeout=60)
            idle = sidecar.peak_rss()
            # Three 60 MiB uploads at once (curl -T streams the file, Content-Length set).
            uploads = [curl("-X", "POST", "-T", str(payload), f"{proxy}/upload") for _ in range(3)]
            for proc in uploads:
                code, body, status, _ = finish(proc)
                assert (code, status) == (0, 200), body
                assert json.loads(body) == expected  # every byte arrived, in order
            # Three 60 MiB downloads at once.
            downloads = [curl("-o", "/dev/null", f"{proxy}/blob/{60 * MiB}") for _ in range(3)]
            for proc in downloads:
                code, _, status, size = finish(proc)
                assert (code, status, size) == (0, 200, 60 * MiB)
            # Without streaming, the three uploads alone peaked at 461 MB.
            grown = sidecar.peak_rss() - idle
            assert grown < 64 * MiB, f"peak RSS {grown / MiB:.0f} MiB above idle"
            # 70 MiB: over the proxy's 64 MiB limit, with and without Content-Length.
            code, _, status, _ = finish(curl("-X", "POST", "-T", str(too_big), f"{proxy}/upload"))
            assert (code, status) == (0, 413)
            with open(too_big, "rb") as stdin:  # from a pipe: curl sends it chunked
                chunked = curl("-X", "POST", "-T", "-", f"{proxy}/upload", stdin=stdin)
                code, _, status, _ = finish(chunked)
            assert (code, status) == (0, 413)
            # The upstream breaks off after the status line and half the body: the
            # client must see a truncated transfer, not a clean short one.
            code, _, status, size = finish(curl("-o", "/dev/null", f"{proxy}/broken/{8 * MiB}"))
            assert (code, status) == (18, 200)  # curl: "partial file"
            assert size < 8 * MiB
            # A client that leaves in the middle of its body got no answer at all.
            with socket.create_connection(("127.0.0.1", proxy_port)) as client:
                client.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n"
                )
                client.sendall(data[:MiB])
                time.sleep(0.5)
            time.sleep(0.5)  # the proxy spools its events in batches
            metrics = sidecar.metrics()
            peak = terminate_promptly(sidecar)
    # Without streaming, three 60 MiB uploads alone peaked at 461 MB.
    print(f"PEAK {peak / MiB:.1f} MiB idle {idle / MiB:.1f} MiB")
    assert peak - idle < 64 * MiB, f"peak {peak / MiB:.0f} MiB, idle {idle / MiB:.0f} MiB"
    assert failures(metrics) == {
        "body_too_large": 2.0,
        "upstream_aborted": 1.0,
        "client_closed": 1.0,
    }

    events = [e for e in stored_ledger(config).events if e["category"] == "access"]
    seen = Counter(
        (
            e["action"],
            e["target"]["name"].split("/")[1],
            e["details"].get("status"),
            e["details"].get("aborted"),
            e["outcome"],
        )
        for e in events
    )
    assert seen == Counter(
        {
            ("POST", "upload", 200, None, "success"): 3,
            ("GET", "blob", 200, None, "success"): 3,
            ("POST", "upload", 413, "body_too_large", "failure"): 2,
            ("GET", "broken", 200, "upstream_aborted", "failure"): 1,
            ("POST", "upload", None, "client_closed", "failure"): 1,
        }
    )


def send(port: int, request_ids: range) -> dict[str, int]:
    """GET /blob/16 once per request id over one keep-alive connection: id -> status."""
    statuses: dict[str, int] = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for number in request_ids:
            request_id = f"rq-{number}"
            connection.request("GET", "/blob/16", headers={"X-Request-Id": request_id})
            answer = connection.getresponse()
            answer.read()
            statuses[request_id] = answer.status
    finally:
        connection.close()
    return statuses


def test_full_spool_pushes_back_and_no_served_request_goes_unrecorded(tmp_path: Path) -> None:
    """The store's disk fills, so shipping stops and the 64 KiB spool fills: the proxy
    holds at most `max_pending_events` events, then answers 503 without forwarding. When
    the disk has room again every request that was served is in the verified trail once,
    and no refused one is."""
    with UpstreamProcess(tmp_path) as upstream, small_tmpfs(tmp_path / "disk", 4 * MiB) as disk:
        config, proxy_port = access_proxy_config(tmp_path / "collector", upstream.url)
        config["destination"]["url"] = f"file://{disk}/store"
        config["sources"]["access_proxy"]["max_pending_events"] = 200
        config["spool"]["max_bytes"] = 64 * 1024
        config["delivery"].update(retry_initial_seconds=0.05, retry_max_seconds=0.2)
        with sidecar_process(tmp_path / "collector", config) as sidecar:
            sidecar.start(timeout=60)
            assert send(proxy_port, range(5)) == {f"rq-{i}": 200 for i in range(5)}
            fill(disk, leave=0)
            statuses = send(proxy_port, range(5, 1205))
            refused = {rid for rid, status in statuses.items() if status == 503}
            served = {rid for rid, status in statuses.items() if status == 200}
            assert served | refused == set(statuses)
            # Some 120 events fill the spool, 200 more wait in memory, the rest are refused.
            assert 200 <= len(served) < 600, len(served)
            assert len(refused) >= 600
            assert f"rq-{1204}" in refused  # still refusing: nothing was dropped to make room
            metrics = sidecar.metrics()
            unfill(disk)
            time.sleep(3)  # shipping resumes, the spool drains, the waiting events go in
            after = send(proxy_port, range(1205, 1210))
            assert set(after.values()) == {200}
            time.sleep(0.5)
            terminate_promptly(sidecar, within=15)
        recorded = Counter(e["correlation"]["request_id"] for e in stored_ledger(config).events)
    assert re.search(r'^auditlock_sidecar_pushback_total\{input="access_proxy"\} (\S+)$',
                     metrics, re.M)  # fmt: skip
    expected = {f"rq-{i}" for i in range(5)} | served | set(after)
    assert set(recorded) == expected
    assert set(recorded.values()) == {1}


def test_unreachable_upstream_is_answered_and_recorded_502(tmp_path: Path) -> None:
    config, proxy_port = access_proxy_config(
        tmp_path / "collector", f"http://127.0.0.1:{free_port()}"
    )
    with sidecar_process(tmp_path / "collector", config) as sidecar:
        sidecar.start(timeout=60)
        code, body, status, _ = finish(
            curl("-X", "POST", "-d", "x=1", f"http://127.0.0.1:{proxy_port}/upload")
        )
        assert (code, status) == (0, 502), body
        time.sleep(0.5)
        metrics = sidecar.metrics()
        terminate_promptly(sidecar)
    assert failures(metrics) == {"upstream_unreachable": 1.0}
    (event,) = stored_ledger(config).events
    assert (event["details"]["status"], event["details"]["aborted"], event["outcome"]) == (
        502,
        "upstream_unreachable",
        "failure",
    )


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the peer closes `sock` within `seconds` (reads nothing else)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_connections_are_capped_and_stalled_ones_closed(tmp_path: Path) -> None:
    """300 connections that send nothing or only half their headers, against a cap of
    50: the 250 over the cap are closed at once, the 50 after the 5 s idle timeout; the
    collector's memory stays flat and a real request then goes through."""
    with UpstreamProcess(tmp_path) as upstream:
        config, proxy_port = access_proxy_config(tmp_path / "collector", upstream.url)
        config["sources"]["access_proxy"].update(max_connections=50, idle_timeout_seconds=5)
        with sidecar_process(tmp_path / "collector", config) as sidecar:
            sidecar.start(timeout=60)
            idle = sidecar.peak_rss()
            stalled = []
            for number in range(300):
                sock = socket.create_connection(("127.0.0.1", proxy_port))
                if number % 2:
                    sock.sendall(b"GET /blob/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                stalled.append(sock)
            time.sleep(0.5)
            started = time.monotonic()
            refused = sum(closed_within(sock, 0.01) for sock in stalled)
            assert refused == 250
            with urllib.request.urlopen(f"{sidecar.health_url}/healthz", timeout=5) as answer:
                assert answer.status == 200
            assert all(closed_within(sock, 10) for sock in stalled)
            assert time.monotonic() - started < 15  # the 5 s idle timeout, not the default 75
            for sock in stalled:
                sock.close()
            code, _, status, size = finish(curl(f"http://127.0.0.1:{proxy_port}/blob/16"))
            assert (code, status, size) == (0, 200, 16)
            time.sleep(0.5)
            metrics = sidecar.metrics()
            peak = terminate_promptly(sidecar)
    assert peak - idle < 16 * MiB
    assert failures(metrics) == {"connection_limit": 250.0}
    # Only the request that was made is recorded: a refused or stalled connection sent none.
    assert [e["target"]["name"] for e in stored_ledger(config).events] == ["/blob/16"]
