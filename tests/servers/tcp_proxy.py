"""A loopback TCP proxy that can misbehave like a network: late, or cut mid-request.

    proxy = LoopbackProxy(upstream_port, delay=0.05)              # a 50 ms round trip
    proxy = LoopbackProxy(upstream_port, cut_after=300_000, cuts=1)  # drop one upload

`delay` is added before each server→client chunk (a remote object store, where uploads are
latency-bound). With `cut_after`, the first `cuts` client→server streams that send more
than `cut_after` bytes have their connection reset at that point (RST both ways), so the
server sees a truncated upload; smaller requests pass untouched.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class LoopbackProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        delay: float = 0.0,
        cut_after: int | None = None,
        cuts: int = 0,
    ) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cut_count = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for args in (
                (client, upstream, 0.0, self.cut_after),
                (upstream, client, self.delay, None),
            ):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, delay: float, limit: int | None
    ) -> None:
        sent = 0
        try:
            while chunk := src.recv(262144):
                if limit is not None and sent + len(chunk) >= limit and self._take_cut():
                    dst.sendall(chunk[: limit - sent])
                    for s in (src, dst):  # RST both ways, like a dropped network
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        s.close()
                    return
                if delay:
                    time.sleep(delay)
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cut_count += 1
            return True

    def close(self) -> None:
        self._listener.close()
