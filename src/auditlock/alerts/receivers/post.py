"""One HTTP/1.1 POST over asyncio streams: what the alert receivers send.

The collector must not load aiohttp for this (about 12 MiB resident, docs/architecture.md
"Why some code is shaped for memory"), and a receiver needs only the status of one
request. So: a new connection per batch (`Connection: close`), a Content-Length body, the
status line and at most MAX_ANSWER bytes of the answer read back; the caller bounds the
whole with a timeout. http and https (system trust store) URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse

MAX_ANSWER = 4096
_FORBIDDEN = frozenset("\r\n\x00 ")


class PostError(Exception):
    pass


def check_url(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PostError(f"{url!r} is not an http:// or https:// URL")
    if any(ch in _FORBIDDEN for ch in url):
        raise PostError(f"{url!r} contains whitespace or control characters")
    return parts


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """(status, the start of the answer's body). Raises PostError or OSError; callers
    bound it with asyncio.timeout."""
    parts = check_url(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "User-Agent: auditlock-alerts",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    reader, writer = await asyncio.open_connection(
        parts.hostname,
        port,
        ssl=ssl.create_default_context() if https else None,
    )
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit():
            raise PostError(f"{url}: not an HTTP answer: {status_line[:80]!r}")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        answer = await reader.read(MAX_ANSWER)
        return int(fields[1]), answer
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
