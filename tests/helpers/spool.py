"""Looking inside a collector's spool files the way damage tests do."""

from __future__ import annotations

from pathlib import Path

from auditlock.sidecar.spool.records import HEADER


def record_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER.size + HEADER.unpack_from(data, offset)[0]
    return offsets
