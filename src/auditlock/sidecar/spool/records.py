"""The on-disk record format of spool segment files.

A segment file is a sequence of records, each

    header   16 bytes: payload length (u32 LE), CRC-32 of the payload (u32 LE),
                       record number (u64 LE)
    payload  msgpack [chunk id digests, spooled-at ns, [event, ...], 2], each event as
             its canonical bytes (RFC 8785, what the ledger hashes), so shipping feeds
             them to the writer without decoding or re-encoding; each chunk id as its
             16-byte digest (chunk_ids.py). Records of older spools have three members
             and the ids themselves (read with `legacy_digest`).

Record numbers increase by one across segment files and never repeat: a failed write
is cut off again before anything else is written (spool.py). A crash can leave the
last record of the last segment half-written (a torn tail, recovery.py).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import msgpack

from auditlock.sidecar.spool.chunk_ids import legacy_digest

HEADER = struct.Struct("<IIQ")
MAX_RECORD_BYTES = 1 << 30
PAYLOAD_VERSION = 2


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    number: int
    chunks: list[bytes]  # chunk id digests
    spooled_ns: int
    events: list[bytes]  # canonical event bytes
    size: int  # bytes on disk including the header
    gap_before: int = 0  # records known lost right before this one (recovery.py)


def encode(number: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload), number) + payload


def pack_encoded(chunks: list[bytes], spooled_ns: int, encoded: list[bytes]) -> bytes:
    """A payload from events already in canonical bytes (chunks: id digests)."""
    data: bytes = msgpack.packb([chunks, spooled_ns, encoded, PAYLOAD_VERSION], use_bin_type=True)
    return data


def decode_payload(number: int, payload: bytes, size: int) -> SpoolRecord:
    fields = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    chunks, spooled_ns, events = fields[0], fields[1], fields[2]
    if len(fields) == 3:
        chunks = [legacy_digest(c) for c in chunks]
    return SpoolRecord(number, chunks, spooled_ns, events, size)


def payload_chunks(payload: bytes) -> tuple[list[bytes], int]:
    """(chunk id digests, spooled-at ns) of a payload, without decoding its events."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(payload))
    unpacker.feed(payload)
    members = unpacker.read_array_header()
    chunks = unpacker.unpack()
    spooled_ns = unpacker.unpack()
    if members == 3:
        chunks = [legacy_digest(c) for c in chunks]
    return chunks, spooled_ns


# Enough payload bytes for the chunk ids of a record of one chunk or a few (16-byte
# digests); a record with more is read further.
_CHUNKS_PREFIX = 512


def chunks_at(fd: int, offset: int, end: int) -> tuple[int, list[bytes]]:
    """(size on disk, chunk id digests) of the record at `offset`, reading its header and
    only as much of its payload as the ids take. The payload's checksum is not checked:
    call this only for records already read whole (recovery or shipping read every
    record with `read_at` before it can be released). Raises BadRecord."""
    if offset + HEADER.size > end:
        raise BadRecord("header cut short", cut_short=True)
    header = os.pread(fd, HEADER.size, offset)
    if len(header) < HEADER.size:
        raise BadRecord("header cut short", cut_short=True)
    length = HEADER.unpack(header)[0]
    if offset + HEADER.size + length > end:
        raise BadRecord(f"payload of {length} bytes cut short", cut_short=True)
    want = min(length, _CHUNKS_PREFIX)
    while True:
        prefix = os.pread(fd, want, offset + HEADER.size)
        try:
            return HEADER.size + length, payload_chunks(prefix)[0]
        except msgpack.OutOfData:
            if want >= length:
                raise BadRecord("payload ends inside its chunk ids", cut_short=False) from None
            want = min(length, want * 8)
        except (ValueError, TypeError) as exc:
            raise BadRecord(f"unreadable chunk ids: {exc}", cut_short=False) from None


class BadRecord(Exception):
    """The bytes at an offset are not a complete, intact record.

    `cut_short`: the record runs past the end of the readable bytes (what a write cut
    off by a crash leaves); otherwise the bytes are there but wrong (damage).
    """

    def __init__(self, message: str, *, cut_short: bool) -> None:
        super().__init__(message)
        self.cut_short = cut_short


def read_at(fd: int, offset: int, end: int) -> tuple[int, bytes]:
    """The record at `offset` of an open file, reading no byte at or past `end`:
    (number, payload). Raises BadRecord."""
    if offset + HEADER.size > end:
        raise BadRecord("header cut short", cut_short=True)
    header = os.pread(fd, HEADER.size, offset)
    if len(header) < HEADER.size:
        raise BadRecord("header cut short", cut_short=True)
    length, crc, number = HEADER.unpack(header)
    if length > MAX_RECORD_BYTES:
        raise BadRecord(f"implausible record length {length}", cut_short=False)
    if offset + HEADER.size + length > end:
        raise BadRecord(f"payload of {length} bytes cut short", cut_short=True)
    payload = os.pread(fd, length, offset + HEADER.size)
    if len(payload) < length:
        raise BadRecord(f"payload of {length} bytes cut short", cut_short=True)
    if zlib.crc32(payload) != crc:
        raise BadRecord("checksum mismatch", cut_short=False)
    return number, payload
