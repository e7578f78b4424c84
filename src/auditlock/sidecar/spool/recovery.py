"""Opening a spool directory after a stop or a crash: check everything before trusting it.

The only silent repair is the torn tail: the last record of the last segment file,
cut short by a crash in the middle of its write (it was never acknowledged, because
acknowledgement waits for the fsync). It is a tear only when the record's bytes end
before its declared end, the bytes that are there do not form a complete record under
another length, and no intact record follows it. Anything else is damage:

* a checksum mismatch, an implausible length or a wrong record number anywhere, a
  torn record in any other place;
* record numbers missing between segment files or before the first one;
* `state.json` unreadable, not the expected shape, missing while the spool's records do
  not start at 1, or claiming more released records than the spool ever held.

Each damage is reported with the file and byte offset. A damaged segment file is
copied to `damaged/` and cut at the damage; the records lost (from the damaged one to
the next readable number) become a declared gap in `state.json`, so the reader knows
them and a later start does not report them again. An untrusted `state.json` is moved
to `damaged/` and every record in the spool is shipped again (events stored before may
then be stored twice; none is lost). The caller (app.py) logs each damage, counts it and
records a signed `alert` event in the trail saying how many unshipped records were lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from auditlock.sidecar.spool.chunk_ids import ChunkMemory
from auditlock.sidecar.spool.records import HEADER, BadRecord, payload_chunks, read_at
from auditlock.sidecar.spool.unreleased import Unreleased

log = logging.getLogger("auditlock.sidecar.spool")

SEGMENT_RE = re.compile(r"^seg-(\d{1,20})\.spool$")
STATE_NAME = "state.json"
DAMAGED_DIR = "damaged"


def segment_name(first: int) -> str:
    return f"seg-{first:020d}.spool"


@dataclass
class Damage:
    """One thing found wrong: where, what, and how many unshipped records it cost."""

    file: str
    offset: int | None
    reason: str
    lost_records: int = 0  # records not yet stored at the destination that are gone
    kept_at: str | None = None  # the copy in damaged/

    def __str__(self) -> str:
        where = self.file if self.offset is None else f"{self.file} at byte {self.offset}"
        text = f"{where}: {self.reason}"
        if self.lost_records:
            text += f"; {self.lost_records} acknowledged record(s) not yet shipped are lost"
        if self.kept_at:
            text += f"; the damaged file is kept as {self.kept_at}"
        return text


@dataclass
class RecoveryReport:
    segments: int = 0
    records: int = 0
    unreleased_records: int = 0
    torn_bytes: int = 0
    problems: list[str] = field(default_factory=list)  # silent repairs (the torn tail)
    damage: list[Damage] = field(default_factory=list)
    reship_all: bool = False  # state.json untrusted: stored events may be stored twice

    @property
    def lost_records(self) -> int:
        return sum(d.lost_records for d in self.damage)


@dataclass
class SegmentInfo:
    first: int
    path: Path
    size: int
    last: int  # last record number in it (first - 1 when empty)


@dataclass
class Recovered:
    segments: list[SegmentInfo]
    released: int
    next_seq: int | None
    epoch: int | None
    gaps: list[tuple[int, int]]  # record numbers known lost, inclusive ranges
    committed: int  # the highest record number used (the next append gets one more)
    unreleased: Unreleased
    report: RecoveryReport
    state_changed: bool  # state.json must be written again (gaps, untrusted state)


@dataclass
class _State:
    released: int = 0
    next_seq: int | None = None
    epoch: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)


def recover(directory: Path, memory: ChunkMemory) -> Recovered:
    """Check and repair the spool in `directory`; the chunk ids of its records go to `memory`."""
    directory.mkdir(parents=True, exist_ok=True)
    report = RecoveryReport()
    state, state_problem = _read_state(directory / STATE_NAME)
    declared = set(state.gaps)
    segments: list[SegmentInfo] = []
    gaps: list[tuple[int, int]] = []
    reported: set[tuple[int, int]] = set()  # gaps already described by a damage entry
    paths = _segment_paths(directory, report)
    unreleased = Unreleased(paths[0][0] - 1 if paths else 0)  # every record, for now
    expected: int | None = None  # the number the next record must carry
    highest = 0
    for index, (first, path) in enumerate(paths):
        if expected is not None and first < expected:
            kept = _keep_aside(directory, path)
            path.unlink(missing_ok=True)
            report.damage.append(
                Damage(
                    path.name,
                    None,
                    f"starts at record {first}, inside the previous "
                    f"segment file (which ends at {expected - 1})",
                    kept_at=kept,
                )
            )
            continue
        if expected is not None and first > expected:
            gaps.append((expected, first - 1))
        expected = first
        segment = SegmentInfo(first, path, 0, first - 1)
        is_last = index == len(paths) - 1
        with open(path, "rb+") as handle:
            fd = handle.fileno()
            size = os.fstat(fd).st_size
            offset = 0
            while offset < size:
                try:
                    number, payload = read_at(fd, offset, size)
                    if number != expected:
                        raise BadRecord(
                            f"record number {number}, expected {expected}", cut_short=False
                        )
                    digests, spooled_ns = _chunks_of(payload)
                except BadRecord as exc:
                    if is_last and exc.cut_short and _is_tear(fd, offset, size, expected):
                        report.torn_bytes += size - offset
                        report.problems.append(
                            f"{path.name}: the last record at byte {offset} is torn, cut "
                            f"short by a crash ({exc}); truncated (it was never acknowledged)"
                        )
                        handle.truncate(offset)
                        os.fsync(fd)
                        break
                    kept = _keep_aside(directory, path)
                    end = _highest_intact(fd, offset, size, expected)
                    if not is_last:
                        end = max(end, paths[index + 1][0] - 1)
                    gaps.append((expected, end))
                    reported.add((expected, end))
                    report.damage.append(
                        Damage(
                            path.name,
                            offset,
                            f"{exc}; records {expected}..{end} are unreadable",
                            lost_records=max(0, end - max(expected - 1, state.released)),
                            kept_at=kept,
                        )
                    )
                    handle.truncate(offset)
                    os.fsync(fd)
                    expected = end + 1
                    break
                length = HEADER.size + len(payload)
                report.records += 1
                unreleased.add(number, spooled_ns, length)
                for digest in digests:
                    memory.add(digest)
                segment.last = number
                offset += length
                expected += 1
            segment.size = offset
        segments.append(segment)
        highest = max(highest, expected - 1)
    report.segments = len(segments)
    # Check the state against the spool before trusting it.
    lowest = segments[0].first if segments else highest + 1
    if state_problem is None and state.released > highest:
        state_problem = (
            f"claims {state.released} released records, but the spool only ever held "
            f"records up to {highest}"
        )
    if state_problem is None and state.next_seq is None and lowest > 1 and report.records:
        state_problem = f"missing, but the spool's records start at {lowest}, not 1"
    state_changed = False
    if state_problem is not None:
        kept = _keep_aside(directory, directory / STATE_NAME)
        report.damage.append(
            Damage(
                STATE_NAME,
                None,
                f"{state_problem}; not trusted: every spooled record is shipped again "
                "(events stored before may be stored twice, none is lost)",
                kept_at=kept,
            )
        )
        report.reship_all = True
        state = _State(released=lowest - 1)
        declared = set()
        state_changed = True
    if segments and segments[0].first > state.released + 1:
        gaps.insert(0, (state.released + 1, segments[0].first - 1))
    for gap in gaps:
        if gap in declared or gap[1] <= state.released:
            continue
        if gap not in reported:
            report.damage.append(
                Damage(
                    "spool",
                    None,
                    f"records {gap[0]}..{gap[1]} are missing (no segment file holds them)",
                    lost_records=gap[1] - max(gap[0] - 1, state.released),
                )
            )
        state_changed = True
    unreleased.release(state.released)
    report.unreleased_records = len(unreleased)
    return Recovered(
        segments=segments,
        released=state.released,
        next_seq=state.next_seq,
        epoch=state.epoch,
        gaps=[g for g in gaps if g[1] > state.released],
        committed=max(highest, state.released),
        unreleased=unreleased,
        report=report,
        state_changed=state_changed,
    )


def _segment_paths(directory: Path, report: RecoveryReport) -> list[tuple[int, Path]]:
    found: list[tuple[int, Path]] = []
    for path in directory.glob("seg-*"):
        match = SEGMENT_RE.match(path.name)
        if match is None or not path.is_file():
            if path.suffix != ".spool":
                continue
            kept = _keep_aside(directory, path)
            path.unlink(missing_ok=True)
            report.damage.append(Damage(path.name, None, "not a segment file name", kept_at=kept))
            continue
        found.append((int(match.group(1)), path))
    return sorted(found)


def _read_state(path: Path) -> tuple[_State, str | None]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _State(), None
    except OSError as exc:
        return _State(), f"unreadable ({exc.strerror})"
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        released = data["released"]
        next_seq = data.get("next_seq")
        epoch = data.get("epoch")
        gaps = data.get("gaps", [])
        if not _count(released) or not _count(next_seq, True) or not _count(epoch, True):
            raise ValueError("released, next_seq and epoch must be counts")
        if not isinstance(gaps, list) or not all(
            isinstance(g, list) and len(g) == 2 and _count(g[0]) and _count(g[1]) for g in gaps
        ):
            raise ValueError("gaps must be [first, last] pairs")
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        return _State(), f"not a valid spool state ({str(exc)[:200]})"
    return _State(released, next_seq, epoch, [(g[0], g[1]) for g in gaps]), None


def _chunks_of(payload: bytes) -> tuple[list[bytes], int]:
    try:
        return payload_chunks(payload)
    except Exception as exc:  # msgpack's errors: a payload that passed its CRC but is no record
        raise BadRecord(f"undecodable payload ({exc!r:.100})", cut_short=False) from None


def _count(value: object, optional: bool = False) -> bool:
    if value is None:
        return optional
    return type(value) is int and value >= 0


def _is_tear(fd: int, offset: int, size: int, expected: int) -> bool:
    """Whether a record cut short at the end of the last file is what a crash leaves."""
    rest = os.pread(fd, size - offset, offset)
    if len(rest) < HEADER.size:
        return True  # a header cut short
    _, crc, number = HEADER.unpack_from(rest)
    if number != expected:
        return False
    if zlib.crc32(rest[HEADER.size :]) == crc:
        return False  # a complete record whose length field changed
    return _highest_intact(fd, offset, size, expected) == expected


def _highest_intact(fd: int, offset: int, size: int, damaged: int) -> int:
    """The highest record number intact after a bad record (`damaged` when none is)."""
    data = os.pread(fd, size - offset, offset)
    highest = damaged
    position = 1
    misses = 0
    number = damaged + 1
    while misses < 3 and position < len(data):
        found = data.find(number.to_bytes(8, "little"), position + 8)
        if found < 0:
            misses += 1
            number += 1
            continue
        start = found - 8
        length, crc = HEADER.unpack_from(data, start)[:2]
        end = start + HEADER.size + length
        if end <= len(data) and zlib.crc32(data[start + HEADER.size : end]) == crc:
            highest = number
            position = end
            misses = 0
            number += 1
        else:
            position = found - 7
    return highest


def _keep_aside(directory: Path, path: Path) -> str | None:
    """Copy a damaged file to damaged/ (for forensics); None when it cannot be kept."""
    if not path.exists():
        return None
    aside = directory / DAMAGED_DIR
    target = aside / f"{path.name}.{time.time_ns()}"
    try:
        aside.mkdir(exist_ok=True)
        shutil.copyfile(path, target)
    except OSError as exc:
        log.error("cannot keep a copy of the damaged %s: %s", path, exc)
        return None
    return f"{DAMAGED_DIR}/{target.name}"
