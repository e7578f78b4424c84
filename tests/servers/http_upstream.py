"""An app behind the access proxy, as its own process: `python -m tests.servers.http_upstream
PORT`.

    POST /upload      reads the body as it comes; answers {"sha256", "bytes"} of it
    GET  /blob/N      streams N bytes (Content-Length: N)
    GET  /broken/N    announces N bytes, sends half, then drops the connection

`UpstreamProcess` starts it on a free port and stops it.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from tests.servers.sidecar import ROOT, free_port

BLOCK = 64 * 1024


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for block in request.content.iter_chunked(BLOCK):
        digest.update(block)
        size += len(block)
    return web.json_response({"sha256": digest.hexdigest(), "bytes": size})


def pattern(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


async def blob(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    response = web.StreamResponse()
    response.content_length = size
    await response.prepare(request)
    block = pattern(BLOCK)
    sent = 0
    while sent < size:
        part = block[: min(BLOCK, size - sent)]
        await response.write(part)
        sent += len(part)
    await response.write_eof()
    return response


async def broken(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    response = web.StreamResponse()
    response.content_length = size
    await response.prepare(request)
    await response.write(pattern(size // 2))
    assert request.transport is not None
    request.transport.abort()
    return response


def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/upload", upload)
    app.router.add_get("/blob/{size:\\d+}", blob)
    app.router.add_get("/broken/{size:\\d+}", broken)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class UpstreamProcess:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "upstream.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UpstreamProcess:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.servers.http_upstream", str(self.port)],
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"upstream did not listen: {self.log_path.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None


if __name__ == "__main__":
    main(int(sys.argv[1]))
