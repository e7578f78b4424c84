"""What the fuzz tests share: request bodies that are raw bytes or any JSON value, a byte
mutator for hypothesis, and one raw exchange with a collector on a fresh connection."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st


def raw_or_json(
    json_values: st.SearchStrategy[Any],
    dumps: Callable[[Any], bytes],
    *more: st.SearchStrategy[bytes],
) -> st.SearchStrategy[bytes]:
    """A request body: up to 200 random bytes, one of `json_values` serialized by `dumps`,
    or one drawn from `more` (the shapes the endpoint expects, mangled)."""
    return st.one_of(st.binary(max_size=200), json_values.map(dumps), *more)


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
