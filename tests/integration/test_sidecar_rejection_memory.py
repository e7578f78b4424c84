"""Rejections must not amplify: a message of millions of invalid entries, within
`max_frame_bytes` / `max_body_bytes`, is refused with a bounded answer, and the collector's
peak RSS (VmHWM of the real process) stays under the container's 128 MiB memory limit.

Each case goes to a real collector process. The process also runs under a 1 GiB
address-space limit, so a regression fails with a MemoryError in the collector instead of
taking the test machine's memory. After the hostile input, a valid event is acknowledged,
and the verified ledger holds exactly that one event: nothing refused was stored.
"""

from __future__ import annotations

import gzip
import json
import resource
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from auditlock.sidecar.sources.forward.protocol import pack_event_time
from tests.servers.sidecar import (
    SidecarProcess,
    ledger_events,
    make_config,
    open_store,
    sidecar_process,
    verify_ledger,
)

LIMIT_MIB = 128
FRAME = 8 * 1024 * 1024  # the default max_frame_bytes and max_body_bytes
# Messages of tiny invalid entries: memory no longer grows with their number, CPU does
# (linearly, ~20 us each); a quarter of the limit keeps the test short. bench/
# bench_sidecar_rejections.py runs the full 8 MiB.
DENSE = FRAME // 4
T = 1_764_428_645


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    workdir = tmp_path_factory.mktemp("rejections")
    config = make_config(workdir, ports=True)
    with sidecar_process(workdir, config) as proc:
        proc.start()
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (1 << 30, 1 << 30))
        yield proc


def forward_exchange(port: int, frame: bytes, timeout: float = 60) -> list[Any]:
    """Send one frame, read what comes back until the sidecar acks or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(frame)
        unpacker = msgpack.Unpacker(raw=False)
        answers: list[Any] = []
        while not answers:
            data = sock.recv(65536)
            if not data:
                break
            unpacker.feed(data)
            answers.extend(unpacker)
        return answers


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events",
        data=body,
        headers={"Content-Type": content_type},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def fill(unit: bytes, header: bytes, budget: int) -> tuple[bytes, int]:
    count = (budget - len(header) - 16) // len(unit)
    return unit * count, count


def packed_empty_records(budget: int) -> tuple[bytes, int]:
    """Packed entries [time, {}]: three bytes each."""
    return fill(b"\x92\x00\x80", b"", budget)


def array32(count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big")


def chunk(name: str) -> bytes:
    return bytes(msgpack.packb({"chunk": name}))


def forward_cases() -> Iterator[Any]:
    tag = msgpack.packb("app.access")

    entries, count = packed_empty_records(DENSE)
    blob = msgpack.packb(gzip.compress(entries, 9))
    yield pytest.param(
        b"\x93" + tag + blob + msgpack.packb({"chunk": "c-gzip", "compressed": "gzip"}),
        count,
        "missing_field",
        id="compressed-packed-empty-records",
    )
    yield pytest.param(
        b"\x93" + tag + b"\xc6" + len(entries).to_bytes(4, "big") + entries + chunk("c-packed"),
        count,
        "missing_field",
        id="packed-empty-records",
    )
    yield pytest.param(
        b"\x93" + tag + array32(count) + entries + chunk("c-forward"),
        count,
        "missing_field",
        id="forward-mode-empty-records",
    )
    # Message mode, one record that is 8 MiB of empty maps: too large to decode.
    maps = FRAME - 128
    record = b"\x81" + msgpack.packb("details") + array32(maps) + b"\x80" * maps
    yield pytest.param(
        b"\x94" + tag + msgpack.packb(pack_event_time(T * 10**9)) + record + chunk("c-message"),
        1,
        "too_large",
        id="message-mode-one-huge-record",
    )


def rejected(proc: SidecarProcess, reason: str) -> float:
    total = 0.0
    for line in proc.metrics().splitlines():
        if line.startswith("auditlock_sidecar_events_rejected_total{") and f'"{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(("frame", "count", "reason"), list(forward_cases()))
def test_forward_message_of_invalid_entries_is_rejected_in_bounded_memory(
    collector: SidecarProcess, frame: bytes, count: int, reason: str
) -> None:
    assert len(frame) <= FRAME
    before = rejected(collector, reason)
    # The chunk is acknowledged: its entries were all refused one by one (Forward has
    # no per-event nack), and each is counted.
    answers = forward_exchange(collector.forward_port, frame)
    assert len(answers) == 1 and list(answers[0]) == ["ack"], answers
    assert rejected(collector, reason) - before == count
    peak = peak_rss_mib(collector.pid)
    assert peak < LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


def http_cases() -> Iterator[Any]:
    items, count = fill(b"{},", b"[]", FRAME)
    yield pytest.param(b"[" + items + b"{}]", 413, None, id="array-of-empty-objects")
    yield pytest.param(b"[" + items.replace(b"{}", b"[]") + b"[]]", 413, None, id="array-of-arrays")
    lines, count = fill(b"{}\n", b"", DENSE)
    yield pytest.param(lines, 400, count, id="ndjson-empty-objects")
    # Just under the decode budget: decoded at once, every item rejected.
    items, count = fill(b"{},", b"[]", 700_000)
    yield pytest.param(b"[" + items + b"{}]", 400, count + 1, id="array-within-budget")


@pytest.mark.parametrize(("body", "status", "count"), list(http_cases()))
def test_http_body_of_invalid_events_is_refused_in_bounded_memory(
    collector: SidecarProcess, body: bytes, status: int, count: int | None
) -> None:
    assert len(body) <= FRAME
    code, answer = post(collector.http_port, body)
    assert code == status, answer[:300]
    assert len(answer) < 64 * 1024, f"{len(answer)}-byte answer"
    payload = json.loads(answer)
    if count is None:
        assert "fewer events per request" in payload["error"]
    else:
        assert payload["error"].startswith(f"{count} invalid event(s), nothing stored")
        assert len(payload["errors"]) == 100
        assert payload["more_errors"] == count - 100
        assert payload["reasons"] == {"missing_field": count}
    peak = peak_rss_mib(collector.pid)
    assert peak < LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


def test_after_the_hostile_input_only_the_valid_event_is_in_the_ledger(
    collector: SidecarProcess, tmp_path: Path
) -> None:
    code, answer = post(
        collector.http_port,
        json.dumps({"category": "access", "action": "read", "actor": "ok", "target": "t"}).encode(),
    )
    assert code == 202, answer
    assert collector.terminate() == 0
    store = open_store(collector.config["destination"]["url"])
    events = ledger_events(store)
    assert [e["event"]["actor"]["name"] for e in events] == ["ok"]
    verify_ledger(store, collector.workdir / "key.pub.pem")
