"""What the collector's fuzz tests share: a byte mutator for hypothesis, and one raw
exchange on a fresh connection."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from hypothesis import strategies as st


def mutate(draw: Any, data: bytes) -> bytes:
    """`data` after one to four random byte edits: a flipped bit, a cut, a few inserted
    bytes or one deleted byte (stopping early when nothing is left)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if action == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del out[at:]
        elif action == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del out[at]
    return bytes(out)


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection, half-close, read what comes back until EOF (b""
    when the collector closed the connection before taking it all: an accepted outcome)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer
