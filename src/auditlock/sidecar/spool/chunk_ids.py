"""Remembered chunk ids: Forward chunk ids and HTTP Idempotency-Keys, one namespace each.

A source names what it must not store twice with a key from `forward_key` or
`http_key`. The one-character prefix keeps the two kinds apart: a Forward chunk id
`http:K` and an HTTP request with `Idempotency-Key: K` are different keys.

The spool keeps only a 16-byte BLAKE2b digest of each key, in records and in memory,
so the memory is bounded in bytes whatever the ids' length: about `ID_BYTES` per
remembered id (measured: 200,000 ids take 20 MB, ids of 1 or 256 characters alike).
A collision of two digests would make a fresh chunk look like a retransmission; at
128 bits that is not a practical concern.

Digests of released records move to `chunk-ids.log` (32 hex characters a line) when
their segment file is deleted, so a retransmission is still recognised after a
restart. The log is rewritten to its last `capacity` lines once it holds twice that.
`chunks.log`, the file of spools written before digests, is still read: its ids were
Forward chunk ids, or `http:K` for an HTTP key K.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("auditlock.sidecar.spool")

ID_BYTES = 100  # memory per remembered id (set entry + deque slot + 16-byte bytes)
DIGEST_BYTES = 16
LOG_NAME = "chunk-ids.log"
LEGACY_LOG_NAME = "chunks.log"
LEGACY_HTTP_PREFIX = "http:"


def forward_key(chunk: str) -> str:
    """The key of a Forward chunk id."""
    return "f" + chunk


def http_key(key: str) -> str:
    """The key of an HTTP Idempotency-Key."""
    return "h" + key


def digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def legacy_digest(chunk: str) -> bytes:
    """The digest of an id as spools before digests stored it (raw, HTTP as `http:K`)."""
    if chunk.startswith(LEGACY_HTTP_PREFIX):
        return digest(http_key(chunk[len(LEGACY_HTTP_PREFIX) :]))
    return digest(forward_key(chunk))


class ChunkMemory:
    """The last `capacity` digests, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._set: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def __contains__(self, item: bytes) -> bool:
        return item in self._set

    def __len__(self) -> int:
        return len(self._set)

    def add(self, item: bytes) -> None:
        if item in self._set:
            return
        self._set.add(item)
        self._order.append(item)
        if len(self._order) > self.capacity:
            self._set.discard(self._order.popleft())


class ChunkKeys:
    """The spool's chunk memory: keys of durable records (the last `capacity`) and keys an
    append is writing right now, each with the future of its commit."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.memory = ChunkMemory(capacity)
        self._inflight: dict[bytes, asyncio.Future[int]] = {}

    def load(self, directory: Path) -> None:
        """Remember the keys of released records (the log; call before recovery)."""
        for item in load_log(directory, self.capacity):
            self.memory.add(item)

    def seen(self, key: str) -> bool:
        """True when a record holding this key is already durable."""
        return digest(key) in self.memory

    def inflight(self, key: str) -> asyncio.Future[int] | None:
        """The commit a key is waiting for, if an append is writing it right now."""
        return self._inflight.get(digest(key))

    def writing(self, digests: list[bytes], future: asyncio.Future[int]) -> None:
        for item in digests:
            self._inflight[item] = future

    def written(self, digests: list[bytes]) -> None:
        """The record holding these is durable."""
        for item in digests:
            self.memory.add(item)
            self._inflight.pop(item, None)

    def not_written(self, digests: list[bytes]) -> None:
        for item in digests:
            self._inflight.pop(item, None)


def load_log(directory: Path, capacity: int) -> list[bytes]:
    """The digests in the logs (legacy log first), the newest `capacity` of them."""
    out: list[bytes] = []
    legacy = directory / LEGACY_LOG_NAME
    if legacy.exists():
        for line in legacy.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith('"'):
                if line:  # written before ids were JSON-encoded
                    out.append(legacy_digest(line))
                continue
            try:
                out.append(legacy_digest(json.loads(line)))
            except ValueError:
                log.warning("%s: skipping a damaged line (torn write?)", legacy)
    path = directory / LOG_NAME
    if path.exists():
        for raw in path.read_bytes().splitlines():
            try:
                if len(raw) == 2 * DIGEST_BYTES:
                    out.append(bytes.fromhex(raw.decode("ascii")))
                    continue
            except ValueError:
                pass
            log.warning("%s: skipping a damaged line (torn write?)", path)
    return out[-capacity:]


def append_log(directory: Path, digests: Iterable[bytes]) -> None:
    """Append digests durably (called before the segment holding them is deleted)."""
    data = b"".join(d.hex().encode("ascii") + b"\n" for d in digests)
    if not data:
        return
    with open(directory / LOG_NAME, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def compact_log(directory: Path, capacity: int) -> None:
    """Keep the newest `capacity` lines once the log holds twice that; fold in the legacy log."""
    path = directory / LOG_NAME
    legacy = directory / LEGACY_LOG_NAME
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size < 2 * capacity * (2 * DIGEST_BYTES + 1) and not legacy.exists():
        return
    keep = load_log(directory, capacity)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.write(b"".join(d.hex().encode("ascii") + b"\n" for d in keep))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    legacy.unlink(missing_ok=True)
