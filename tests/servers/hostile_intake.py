"""Hostile intake payloads and the helpers to send them to a collector process: messages of
millions of invalid entries within the frame or body limit, used by
tests/integration/test_sidecar_rejection_memory.py and bench/bench_sidecar_rejections.py.

Each case is (name, payload, what the collector answers, how many events it refuses and
with which reason); `size` is how many bytes the dense part may take.
"""

from __future__ import annotations

import gzip
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from auditlock.sidecar.sources.forward.protocol import pack_event_time
from tests.helpers.http_intake import post_bytes

FRAME = 8 * 1024 * 1024  # the default max_frame_bytes and max_body_bytes
T = 1_764_428_645


@dataclass
class Case:
    name: str
    payload: bytes
    answer: Any  # Forward: the chunk acked; HTTP: the status
    refused: int | None  # events refused one by one (None: the whole body is refused)
    reason: str = "missing_field"


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def forward_exchange(port: int, frame: bytes, timeout: float = 600) -> list[Any]:
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


def post(port: int, body: bytes, timeout: float = 600) -> tuple[int, bytes]:
    status, answer, _ = post_bytes(port, body, timeout=timeout)
    return status, answer


def _fill(unit: bytes, size: int) -> tuple[bytes, int]:
    count = (size - 64) // len(unit)
    return unit * count, count


def _array32(count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big")


def _chunk(name: str, **option: Any) -> bytes:
    return bytes(msgpack.packb({"chunk": name, **option}))


def forward_cases(size: int) -> list[Case]:
    tag = msgpack.packb("app.access")
    entries, count = _fill(b"\x92\x00\x80", size)  # packed [time, {}]: three bytes each
    blob = msgpack.packb(gzip.compress(entries, 9))
    maps = FRAME - 128  # one record of 8 MiB of empty maps: too large to decode
    record = b"\x81" + msgpack.packb("details") + _array32(maps) + b"\x80" * maps
    time = msgpack.packb(pack_event_time(T * 10**9))
    # Entries just under the 256 KiB entry limit, each a record of empty maps (~14 MiB
    # decoded): decoded and refused one by one, never a message's worth at once.
    large = time + b"\x81" + msgpack.packb("details") + _array32(200_000) + b"\x80" * 200_000
    large_entries, large_count = _fill(b"\x92" + large, size)
    return [
        Case(
            "compressed-packed-empty-records",
            b"\x93" + tag + blob + _chunk("c-gzip", compressed="gzip"),
            "c-gzip",
            count,
        ),
        Case(
            "packed-empty-records",
            b"\x93" + tag + b"\xc6" + len(entries).to_bytes(4, "big") + entries + _chunk("c-pk"),
            "c-pk",
            count,
        ),
        Case(
            "forward-mode-empty-records",
            b"\x93" + tag + _array32(count) + entries + _chunk("c-fw"),
            "c-fw",
            count,
        ),
        Case(
            "forward-mode-large-records",
            b"\x93" + tag + _array32(large_count) + large_entries + _chunk("c-fw-large"),
            "c-fw-large",
            large_count,
        ),
        Case(
            "packed-large-records",
            b"\x93"
            + tag
            + b"\xc6"
            + len(large_entries).to_bytes(4, "big")
            + large_entries
            + _chunk("c-pk-large"),
            "c-pk-large",
            large_count,
        ),
        Case(
            "message-mode-one-huge-record",
            b"\x94" + tag + time + record + _chunk("c-msg"),
            "c-msg",
            1,
            "too_large",
        ),
    ]


def http_cases(size: int) -> list[Case]:
    items, _ = _fill(b"{},", FRAME)
    lines, count = _fill(b"{}\n", size)
    within, within_count = _fill(b"{},", 700_000)  # just under the decode budget
    # Valid events as small as they come: each a ~300-byte ledger line from 60 bytes.
    small, _ = _fill(b'{"category":"access","action":"a","actor":"b","target":"c"}\n', FRAME)
    return [
        Case("array-of-empty-objects", b"[" + items + b"{}]", 413, None),
        Case("array-of-empty-arrays", b"[" + items.replace(b"{}", b"[]") + b"[]]", 413, None),
        Case("ndjson-empty-objects", lines, 400, count),
        Case("array-within-decode-budget", b"[" + within + b"{}]", 400, within_count + 1),
        Case("ndjson-smallest-valid-events", small, 413, None),
    ]
