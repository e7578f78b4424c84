"""Fluentd Forward clients for tests: a retransmitting one (like out_forward) and the
pieces tests build raw frames from."""

from __future__ import annotations

import asyncio
import socket
import time
import weakref
from typing import Any

import msgpack

from auditlock.sidecar.sources.forward import protocol
from auditlock.sidecar.sources.forward.server import ForwardServer

CHUNK_EVENTS = 500


class RetransmittingClient:
    """PackedForward with chunk acks; retransmits the same chunk until it is acked."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.unpacker = msgpack.Unpacker(raw=False)
        self.retransmissions = 0
        self.acked_events = 0

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.unpacker = msgpack.Unpacker(raw=False)
        return sock

    def send(self, chunk: str, frame: bytes, count: int) -> None:
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                self.retransmissions += 1
            try:
                if self.sock is None:
                    self.sock = self._connect()
                self.sock.sendall(frame)
                if self._wait_ack(chunk):
                    self.acked_events += count
                    return
            except OSError:
                pass
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            time.sleep(0.05)

    def _wait_ack(self, chunk: str) -> bool:
        assert self.sock is not None
        while True:
            for message in self.unpacker:
                if message == {"ack": chunk}:
                    return True
            data = self.sock.recv(4096)
            if not data:
                return False
            self.unpacker.feed(data)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def chunk_frame(first: int, count: int, chunk: str) -> bytes:
    now = time.time_ns()
    entries = b"".join(
        msgpack.packb(
            [
                protocol.pack_event_time(now + n),
                {"action": "read", "actor": "load", "target": "orders", "n": n},
            ]
        )
        for n in range(first, first + count)
    )
    return bytes(msgpack.packb(["app.access", entries, {"chunk": chunk, "size": count}]))


def first_answer(port: int, frame: bytes, timeout: float) -> Any:
    """Send `frame` on a fresh connection and return the first msgpack message that comes
    back (AssertionError when the collector closes the connection without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(frame)
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = sock.recv(4096)
            assert data, "the collector closed the connection without an answer"
            unpacker.feed(data)
            for message in unpacker:
                return message


def forward_port(sidecar: Any) -> int:
    return int(sidecar.source(ForwardServer).port)


_UNPACKERS: weakref.WeakKeyDictionary[asyncio.StreamReader, msgpack.Unpacker] = (
    weakref.WeakKeyDictionary()
)


async def read_ack(reader: asyncio.StreamReader, wait: float = 5.0) -> Any:
    """The next msgpack answer on this connection (keeps what arrived beyond it)."""
    unpacker = _UNPACKERS.setdefault(reader, msgpack.Unpacker(raw=False))
    while True:
        for message in unpacker:
            return message
        data = await asyncio.wait_for(reader.read(4096), wait)
        if not data:
            raise ConnectionError("closed before an answer")
        unpacker.feed(data)
