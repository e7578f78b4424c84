"""A small HTTP/1.1 server on asyncio streams, for the intake and health endpoints.

Why not aiohttp here: importing aiohttp costs resident memory and start-up time
(docs/benchmarks.md, "Import costs") in a container whose budget is 48 MiB idle and
ready within 1.5 s; these endpoints need
only routing by (method, path), Content-Length or chunked bodies, `Expect:
100-continue` and keep-alive. (The optional access proxy, a real reverse proxy, uses
aiohttp and imports it only when enabled.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol
from urllib.parse import urlsplit

from auditlock.sidecar.connections import ConnectionSlots, Timeouts
from auditlock.sidecar.metrics import Metrics

log = logging.getLogger("auditlock.sidecar.http")

MAX_LINE = 16 * 1024
MAX_HEADERS = 100
_REQUEST_LINE = re.compile(r"([A-Z]{1,16}) (\S{1,16384}) (HTTP/1\.[01])")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    remote: str


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        routes: dict[tuple[str, str], Handler],
        max_body_bytes: int = 1024 * 1024,
        name: str = "http",
        *,
        slots: ConnectionSlots | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.name = name
        self.slots = slots or ConnectionSlots(name, 1024, None)
        self.timeouts = timeouts or Timeouts(header=10.0, body=30.0, idle=60.0)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=MAX_LINE
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.slots.admit():
            # Over the cap: a short answer and the socket (and its descriptor) back at once.
            refusal = Response(503, b"too many connections\n")
            writer.write(_head(refusal, False) + refusal.body)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else ""
        try:
            first = True
            while await self._one_request(reader, writer, remote, first):
                first = False
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.slots.release()
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str, first: bool
    ) -> bool:
        """Serve one request; False when the connection should close."""
        timeouts = self.timeouts
        try:
            # The request line: within the header timeout on a new connection; a
            # keep-alive connection may wait up to the idle timeout for its next request.
            async with asyncio.timeout(timeouts.header if first else timeouts.idle):
                line = await reader.readline()
        except TimeoutError:
            self.slots.timed_out("header" if first else "idle")
            return False
        except ValueError:  # line longer than the stream limit
            await self._send(writer, Response(431, b"request line too long\n"), False)
            return False
        if not line:
            return False
        try:
            async with asyncio.timeout(timeouts.header):
                request_line = _REQUEST_LINE.fullmatch(line.decode("latin-1").rstrip("\r\n"))
                if request_line is None:
                    raise BadRequest(400, "malformed request line")
                method, target, version = request_line.groups()
                headers = await self._headers(reader)
        except TimeoutError:
            self.slots.timed_out("header")
            await self._send(writer, Response(408, b"headers not received in time\n"), False)
            return False
        except (ValueError, BadRequest) as exc:
            status = exc.status if isinstance(exc, BadRequest) else 400
            await self._send(writer, Response(status, b"malformed request\n"), False)
            return False
        keep_alive = _keep_alive(version, headers)
        try:
            async with asyncio.timeout(timeouts.body):
                body = await self._body(reader, writer, headers)
        except TimeoutError:
            self.slots.timed_out("body")
            await self._send(writer, Response(408, b"body not received in time\n"), False)
            return False
        except BadRequest as exc:
            await self._send(writer, Response(exc.status, f"{exc}\n".encode()), False)
            return False
        parts = urlsplit(target)
        handler = self.routes.get((method, parts.path))
        if handler is None:
            allowed = [m for (m, p) in self.routes if p == parts.path]
            status = 405 if allowed else 404
            response = Response(status, f"{HTTPStatus(status).phrase}\n".encode())
        else:
            request = Request(method, parts.path, parts.query, headers, body, remote)
            try:
                response = await handler(request)
            except Exception:
                log.exception("%s handler for %s %s failed", self.name, method, parts.path)
                response = Response(500, b"internal error\n")
        await self._send(writer, response, keep_alive)
        return keep_alive

    async def _headers(self, reader: asyncio.StreamReader) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raise BadRequest(431, "too many headers")

    async def _body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> bytes:
        encoding = headers.get("transfer-encoding")
        length_text = headers.get("content-length")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                # RFC 9112 6.1: a coding the server does not know is 501, nothing else.
                status = 501 if _TOKEN.fullmatch(encoding.strip()) else 400
                raise BadRequest(status, f"Transfer-Encoding {encoding[:40]!r} is not supported")
            if length_text is not None:  # RFC 9112 6.3: ambiguous framing is refused
                raise BadRequest(400, "both Transfer-Encoding and Content-Length")
        elif length_text is None:
            return b""
        length = 0
        if length_text is not None and encoding is None:
            if not _DIGITS.fullmatch(length_text):
                raise BadRequest(400, "bad Content-Length")
            length = int(length_text)
            if length > self.max_body_bytes:
                raise BadRequest(413, f"body larger than {self.max_body_bytes} bytes")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if encoding is None:
            return await reader.readexactly(length)
        return await self._chunked(reader)

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await _line(reader)
            size_text = size_line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise BadRequest(400, "bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                while (await _line(reader)) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: ignored
                return b"".join(parts)
            total += size
            if total > self.max_body_bytes:
                raise BadRequest(413, f"body larger than {self.max_body_bytes} bytes")
            parts.append(await reader.readexactly(size))
            if await _line(reader) not in (b"\r\n", b"\n"):
                raise BadRequest(400, "chunk data not followed by CRLF")

    async def _send(
        self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool
    ) -> None:
        writer.write(_head(response, keep_alive) + response.body)
        await writer.drain()


def _head(response: Response, keep_alive: bool) -> bytes:
    phrase = HTTPStatus(response.status).phrase
    head = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    head.extend(f"{k}: {v}" for k, v in response.headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


async def _line(reader: asyncio.StreamReader) -> bytes:
    """One line of a chunked body; a line over the stream limit is a bad request."""
    try:
        return await reader.readline()
    except ValueError:
        raise BadRequest(400, "chunk-size or trailer line too long") from None


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


class ListenerConfig(Protocol):
    """The config section of an HTTP listener: its address, connection cap and timeouts."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def header_timeout_seconds(self) -> float: ...
    @property
    def idle_timeout_seconds(self) -> float: ...


class HttpListener:
    """One of the collector's HTTP endpoints (HTTP intake, health): an `HttpServer` on its
    configured address with its own connection cap and timeouts (connections.py),
    started and stopped with the collector."""

    def __init__(
        self,
        config: ListenerConfig,
        routes: dict[tuple[str, str], Handler],
        *,
        name: str,
        listener: str,
        metrics: Metrics,
        body_timeout: float,
        log: logging.Logger,
        what: str,
        max_body_bytes: int = 1024 * 1024,
    ) -> None:
        self.config = config
        self._log = log
        self._what = what  # for the log line once listening
        self.server = HttpServer(
            config.host,
            config.port,
            routes,
            max_body_bytes=max_body_bytes,
            name=name,
            slots=ConnectionSlots(listener, config.max_connections, metrics),
            timeouts=Timeouts(
                header=config.header_timeout_seconds,
                body=body_timeout,
                idle=config.idle_timeout_seconds,
            ),
        )

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()
        self._log.info("%s on %s:%d", self._what, self.config.host, self.port)

    async def stop(self) -> None:
        await self.server.stop()
