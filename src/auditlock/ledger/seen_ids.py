"""The event ids of one stream, for the warning `duplicate-id` (docs/FORMAT.md sections 3
and 11.3.3), in memory that does not grow with the stream.

Every repeated id of a stream is reported, in any epoch, however far apart. Holding every
id would cost about 95 bytes per event (a Python set of strings), so the ids are kept as
sorted runs:

* the ids of the newest `run_ids` events are a set in memory, checked as each segment
  arrives: a repeat within it is reported at once, at its line;
* when the set is full it is written, sorted, to a temporary file (a run) and emptied;
* at the end of the stream the runs are merged (a k-way merge, reading each run in order):
  an id found in an earlier run is a repeat too, reported then, in stream order, after the
  stream's other warnings.

A stream of fewer than `run_ids` events never touches the disk. Memory is the set
(`run_ids` ids) plus one reporting callback per segment; disk is about 20 bytes per event
plus the id, under $TMPDIR, removed when the stream is done.
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson

RUN_IDS = 50_000  # ids held in memory (about 5 MiB, and as much again while writing a run)
MERGE_FAN_IN = 64  # runs merged at once (open files)

Report = Callable[[int, str, str], None]  # (seq, code, message), as line_rules reports


class SeenIds:
    """Ids seen so far in one stream; `repeat_*` say whether an id was seen before."""

    def __init__(self, run_ids: int | None = None) -> None:
        self._run_ids = RUN_IDS if run_ids is None else run_ids
        self._reset()

    def _reset(self) -> None:
        self._ids: set[str] = set()
        # first occurrences in the current run: (segment number, first seq, ids of the
        # consecutive lines from that seq on)
        self._pending: list[tuple[int, int, list[str]]] = []
        self._segments: list[Report] = []  # how to report at a line of segment n
        self._runs: list[Path] = []
        self._dir: Path | None = None
        self._files = 0

    def segment(self, warn: Report) -> None:
        """The lines that follow are one segment's; `warn` reports at one of its lines."""
        if len(self._ids) >= self._run_ids:
            self._spill()
        self._segments.append(warn)

    def all_new(self, ids: list[str], first_seq: int) -> bool:
        """True, and remembered, if the ids (of lines first_seq, first_seq + 1, ...) are
        distinct and none is in memory; else False and nothing is remembered."""
        unique = set(ids)
        if len(unique) != len(ids) or not self._ids.isdisjoint(unique):
            return False
        self._ids |= unique
        self._pending.append((len(self._segments) - 1, first_seq, ids))
        return True

    def seen(self, event_id: str, seq: int) -> bool:
        """Whether `event_id` (of line `seq`) is in memory; remembers it if not."""
        if event_id in self._ids:
            return True
        self._ids.add(event_id)
        self._pending.append((len(self._segments) - 1, seq, [event_id]))
        return False

    def finish(self) -> None:
        """Report the repeats across runs (if any run was written); then forget it all."""
        try:
            if self._runs:
                self._spill()
                for segment, seq, event_id in sorted(self._repeats_across_runs()):
                    self._segments[segment](
                        seq, "duplicate-id", f"event id {event_id!r} was used before"
                    )
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._reset()

    def _spill(self) -> None:
        records = sorted(
            (event_id, segment, first + i)
            for segment, first, ids in self._pending
            for i, event_id in enumerate(ids)
        )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="auditlock-verify-ids-"))
        self._runs.append(self._write(records))
        self._ids = set()
        self._pending = []

    def _write(self, records: Iterable[tuple[str, int, int]]) -> Path:
        assert self._dir is not None
        self._files += 1
        path = self._dir / f"run-{self._files:08d}"
        with path.open("wb") as out:
            out.writelines(orjson.dumps(r) + b"\n" for r in records)
        return path

    def _repeats_across_runs(self) -> Iterator[tuple[int, int, str]]:
        """(segment, seq, id) of every occurrence after the first, run by run. Runs are in
        stream order and each holds an id at most once (its first occurrence there)."""
        runs = self._runs
        while len(runs) > MERGE_FAN_IN:  # merge the oldest runs first: order is kept
            first, runs = runs[:MERGE_FAN_IN], runs[MERGE_FAN_IN:]
            later: list[tuple[str, int, int]] = []
            merged = self._write(self._firsts(first, later))
            yield from ((s, q, i) for i, s, q in later)
            runs = [merged, *runs]
        repeats: list[tuple[str, int, int]] = []
        for _ in self._firsts(runs, repeats):
            pass
        yield from ((s, q, i) for i, s, q in repeats)

    @staticmethod
    def _firsts(
        runs: list[Path], repeats: list[tuple[str, int, int]]
    ) -> Iterator[tuple[str, int, int]]:
        """The first occurrence of each id over `runs` (in order, sorted by id); the
        later occurrences go to `repeats`."""
        files = [path.open("rb") for path in runs]
        try:
            readers = [map(_record, f) for f in files]
            merged = heapq.merge(*readers, key=lambda r: r[0])  # ties: earlier run first
            for _, group in itertools.groupby(merged, key=lambda r: r[0]):
                first, *later = group
                repeats.extend(later)
                yield first
        finally:
            for f in files:
                f.close()


def _record(line: bytes) -> tuple[str, int, int]:
    event_id, segment, seq = orjson.loads(line)
    return event_id, segment, seq
