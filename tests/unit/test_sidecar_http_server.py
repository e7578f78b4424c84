"""The sidecar's small HTTP/1.1 server: bodies, keep-alive, Expect, errors."""

from __future__ import annotations

import asyncio

from auditlock.sidecar.http_server import HttpServer, Request, Response


async def echo(request: Request) -> Response:
    return Response(200, request.body, headers={"X-Query": request.query})


async def boom(request: Request) -> Response:
    raise RuntimeError("handler bug")


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    writer.close()
    return data


async def started(**kwargs: int) -> HttpServer:
    server = HttpServer("127.0.0.1", 0, {("POST", "/echo"): echo, ("GET", "/boom"): boom}, **kwargs)
    await server.start()
    return server


async def test_content_length_body_and_query() -> None:
    server = await started()
    try:
        answer = await exchange(
            server.port,
            b"POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Connection: close\r\n\r\nhello",
        )
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"X-Query: a=1" in head
        assert body == b"hello"
    finally:
        await server.stop()


async def test_chunked_body_expect_continue_and_keep_alive() -> None:
    server = await started()
    try:
        raw = (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxy"
        )
        answer = await exchange(server.port, raw)
        assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
        assert answer.count(b"HTTP/1.1 200 OK") == 2  # two requests on one connection
        assert b"\r\n\r\nabcde" in answer and answer.endswith(b"xy")
    finally:
        await server.stop()


async def test_errors_404_405_413_400_and_500() -> None:
    server = await started(max_body_bytes=10)
    try:
        missing = await exchange(server.port, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404")
        wrong = await exchange(server.port, b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert wrong.startswith(b"HTTP/1.1 405")
        big = await exchange(server.port, b"POST /echo HTTP/1.1\r\nContent-Length: 99\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 413")
        garbage = await exchange(server.port, b"NONSENSE\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        failing = await exchange(server.port, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert failing.startswith(b"HTTP/1.1 500")
    finally:
        await server.stop()
