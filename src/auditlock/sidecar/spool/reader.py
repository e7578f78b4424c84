"""Reading durable spool records back, in order (the shipper's side of the spool).

Reads go through `os.pread` up to the durable end of each file, never further: bytes
past it may belong to a write that fails and is cut off again (commit.py). A record
number that is not the one expected is an error (`SpoolCorrupt`), never skipped.
"""

from __future__ import annotations

import dataclasses
import os

from auditlock.sidecar.spool.records import HEADER, BadRecord, SpoolRecord, decode_payload, read_at
from auditlock.sidecar.spool.recovery import SegmentInfo
from auditlock.sidecar.spool.state import SpoolState


class SpoolCorrupt(Exception):
    """A durable record cannot be read back, or is not the one expected: names file and offset."""


class SpoolReader:
    """Reads durable records in order, starting after a record number.

    Reads go through `os.pread` up to the durable end of each file, never further:
    bytes past it may belong to a write that fails and is cut off again.
    """

    def __init__(self, state: SpoolState, after: int) -> None:
        self.state = state
        self.position = after  # last record number returned (or skipped as lost)
        self._segment: SegmentInfo | None = None
        self._fd: int | None = None
        self._offset = 0
        self._gap = 0  # lost records just stepped over, reported on the next record
        self._positioning = False  # skipping records before `after` in the first file

    def read(self, max_events: int) -> list[SpoolRecord]:
        """Durable records after the current position, up to about `max_events` events.

        Raises SpoolCorrupt when a durable record cannot be read or is not the next one.
        """
        out: list[SpoolRecord] = []
        count = 0
        while self.position < self.state.committed and count < max_events:
            gap = _gap_at(self.state.gaps, self.position + 1)
            if gap is not None:
                self._gap += gap[1] - gap[0] + 1
                self.position = gap[1]
                continue
            record = self._next(self.position + 1)
            if record is None:
                break
            self.position = record.number
            out.append(record)
            count += len(record.events)
        return out

    def _next(self, wanted: int) -> SpoolRecord | None:
        segment = self._segment
        if segment is None or self._offset >= segment.size:
            segment = self._locate(wanted)
            if segment is None:
                return None
        assert self._fd is not None
        while self._offset < segment.size:
            offset = self._offset
            try:
                number, payload = read_at(self._fd, offset, segment.size)
            except BadRecord as exc:
                raise SpoolCorrupt(f"{segment.path} at byte {offset}: {exc}") from None
            self._offset = offset + HEADER.size + len(payload)
            if number < wanted and self._positioning:
                continue  # positioning inside the first file read
            if number != wanted:
                raise SpoolCorrupt(
                    f"{segment.path} at byte {offset}: record number {number}, expected {wanted}"
                )
            self._positioning = False
            record = decode_payload(number, payload, HEADER.size + len(payload))
            if self._gap:
                record = dataclasses.replace(record, gap_before=self._gap)
                self._gap = 0
            return record
        return None

    def _locate(self, wanted: int) -> SegmentInfo | None:
        """Open the file that holds record `wanted`; None when it is not durable yet."""
        candidates = [s for s in self.state.segments if s.first <= wanted]
        if not candidates:
            raise SpoolCorrupt(f"no spool file holds record {wanted}")
        segment = candidates[-1]
        if segment is self._segment:
            if segment is self.state.segments[-1]:
                return None  # the tail: the record is not durable yet
            raise SpoolCorrupt(
                f"{segment.path} ends at byte {segment.size} without record {wanted}"
            )
        self.close()
        self._fd = os.open(segment.path, os.O_RDONLY)
        self._segment = segment
        self._offset = 0
        self._positioning = segment.first < wanted
        return segment

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._segment = None


def _gap_at(gaps: list[tuple[int, int]], number: int) -> tuple[int, int] | None:
    """The lost range starting at record `number`, if any."""
    for gap in gaps:
        if gap[0] == number:
            return gap
    return None
