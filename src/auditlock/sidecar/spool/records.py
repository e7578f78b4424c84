"""The on-disk record format of spool segment files.

A segment file is a sequence of records, each

    header   16 bytes: payload length (u32 LE), CRC-32 of the payload (u32 LE),
                       record number (u64 LE)
    payload  msgpack [chunk ids, spooled-at ns, [event, ...]], each event as its
             canonical bytes (RFC 8785, what the ledger hashes), so shipping feeds them
             to the writer without decoding or re-encoding

Record numbers increase by one across segment files. A crash can leave the last
record of the last segment half-written (a torn tail): its length runs past the end
of the file or its CRC does not match. Recovery truncates the file there; the record
was never acknowledged because acknowledgement waits for fsync.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgpack

from auditlock.ledger.canonical import canonical_bytes

HEADER = struct.Struct("<IIQ")
MAX_RECORD_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    number: int
    chunks: list[str]
    spooled_ns: int
    events: list[bytes]  # canonical event bytes
    size: int  # bytes on disk including the header


def encode(number: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload), number) + payload


def pack_payload(chunks: list[str], spooled_ns: int, events: list[dict[str, Any]]) -> bytes:
    """Raises TypeError (orjson.JSONEncodeError) for a value without canonical bytes."""
    return pack_encoded(chunks, spooled_ns, [canonical_bytes(event) for event in events])


def pack_encoded(chunks: list[str], spooled_ns: int, encoded: list[bytes]) -> bytes:
    """A payload from events already in canonical bytes."""
    data: bytes = msgpack.packb([chunks, spooled_ns, encoded], use_bin_type=True)
    return data


def decode_payload(number: int, payload: bytes, size: int) -> SpoolRecord:
    chunks, spooled_ns, events = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return SpoolRecord(number, chunks, spooled_ns, events, size)


class TornRecord(Exception):
    """The bytes at an offset are not a complete, intact record."""


def read_record(handle: BinaryIO) -> tuple[int, bytes] | None:
    """Read the next record at the handle's position: (number, payload), or None at EOF.

    Raises TornRecord when the record is incomplete or its checksum fails; the handle's
    position is then undefined and the caller truncates or stops at the record's start.
    """
    header = handle.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise TornRecord("header cut short")
    length, crc, number = HEADER.unpack(header)
    if length > MAX_RECORD_BYTES:
        raise TornRecord(f"implausible record length {length}")
    payload = handle.read(length)
    if len(payload) < length:
        raise TornRecord("payload cut short")
    if zlib.crc32(payload) != crc:
        raise TornRecord("checksum mismatch")
    return number, payload
