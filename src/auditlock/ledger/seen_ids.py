"""The event ids of one stream, for the warning `duplicate-id` (docs/FORMAT.md sections 3
and 11.3.3), in memory that does not grow with the stream.

Every repeated id of a stream is reported, in any epoch, however far apart. Holding every
id would cost about 95 bytes per event (a Python set of strings), so the ids are kept as
sorted runs:

* the ids of the newest `RUN_IDS` events are a set in memory, checked as each segment
  arrives: a repeat within it is reported at once, at its line;
* when the set is full its ids are written, sorted, to a temporary file (a run), with the
  position of each in the run beside it, and the set is emptied;
* at the end of the stream the runs are merged in sorted order (a k-way merge reading
  each run front to back; MERGE_FAN_IN files at a time): an id in two runs is a repeat.
  Only then are the repeats' positions looked up, run by run, and reported in stream
  order, after the stream's other warnings.

All per-id work when writing a run is done by C code (a keyed sort, a join, an array);
merging costs one comparison per id. A stream of fewer than `RUN_IDS` events never
touches the disk. Memory is the set plus one reporting callback per segment; disk is the
ids plus 4 bytes each, under $TMPDIR, removed when the stream is done.
"""

from __future__ import annotations

import bisect
import heapq
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

RUN_IDS = 50_000  # ids held in memory (about 5 MiB)
MERGE_FAN_IN = 64  # runs merged at once (open files)

Report = Callable[[int, str, str], None]  # (seq, code, message), as line_rules reports


class _Run:
    """One run on disk: its ids sorted (one per line, escaped), the position in the run
    of each (`.pos`, 4 bytes each), and where the run's positions are in the stream."""

    def __init__(self, path: Path, spans: list[tuple[int, int, int]]) -> None:
        self.path = path
        self.spans = spans  # (first position, segment number, first seq), ascending
        self.starts = [s[0] for s in spans]

    def place(self, position: int) -> tuple[int, int]:
        """(segment number, seq) of the id at `position` of the run."""
        first, segment, seq = self.spans[bisect.bisect_right(self.starts, position) - 1]
        return segment, seq + position - first


class SeenIds:
    """Ids seen so far in one stream; `all_new` and `seen` say whether an id was seen
    before (in memory); `finish` reports the repeats found across runs."""

    def __init__(self, run_ids: int | None = None) -> None:
        self._run_ids = RUN_IDS if run_ids is None else run_ids
        self._segments: list[Report] = []  # how to report at a line of segment n
        self._runs: list[_Run] = []
        self._dir: Path | None = None
        self._new_run()

    def _new_run(self) -> None:
        self._ids: set[str] = set()
        self._order: list[str] = []  # the ids of the run, escaped, by position
        self._spans: list[tuple[int, int, int]] = []

    def segment(self, warn: Report) -> None:
        """The lines that follow are one segment's; `warn` reports at one of its lines."""
        if len(self._ids) >= self._run_ids:
            self._spill()
        self._segments.append(warn)

    def all_new(self, ids: list[str], first_seq: int) -> bool:
        """True, and remembered, if the ids (of lines first_seq, first_seq + 1, ...; each
        matching FORMAT.md's id pattern) are distinct and none is in memory; else False and
        nothing is remembered."""
        unique = set(ids)
        if len(unique) != len(ids) or not self._ids.isdisjoint(unique):
            return False
        self._ids |= unique
        self._spans.append((len(self._order), len(self._segments) - 1, first_seq))
        self._order += ids  # the id pattern has no character that needs escaping
        return True

    def seen(self, event_id: str, seq: int) -> bool:
        """Whether `event_id` (of line `seq`, any string) is in memory; remembers it if not."""
        if event_id in self._ids:
            return True
        self._ids.add(event_id)
        self._spans.append((len(self._order), len(self._segments) - 1, seq))
        # Escaped to printable ASCII (one line, and byte order is text order in a run);
        # ids of the id pattern are unchanged by it.
        self._order.append(event_id.encode("unicode_escape").decode("ascii"))
        return False

    def finish(self) -> None:
        """Report the repeats across runs (if any run was written); then forget it all."""
        try:
            if self._runs:
                self._spill()
                repeated = self._repeated(self._runs)
                if repeated:
                    self._report(repeated)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._segments, self._runs, self._dir = [], [], None
            self._new_run()

    def _spill(self) -> None:
        order = self._order
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="auditlock-verify-ids-"))
        path = self._dir / f"run-{len(self._runs):08d}"
        ranks = sorted(range(len(order)), key=order.__getitem__)
        text = "\n".join(map(order.__getitem__, ranks)) + "\n" if order else ""
        path.write_bytes(text.encode("ascii"))
        path.with_suffix(".pos").write_bytes(array("I", ranks).tobytes())
        self._runs.append(_Run(path, self._spans))
        self._new_run()

    def _repeated(self, runs: list[_Run]) -> set[bytes]:
        """The ids (as stored lines) found in more than one run."""
        assert self._dir is not None
        repeated: set[bytes] = set()
        paths = [run.path for run in runs]
        level = 0
        while len(paths) > MERGE_FAN_IN:  # merge in stages, keeping each id once
            level += 1
            merged = []
            for i in range(0, len(paths), MERGE_FAN_IN):
                out = self._dir / f"merged-{level}-{i:08d}"
                with out.open("wb") as f:
                    f.writelines(_unique(paths[i : i + MERGE_FAN_IN], repeated))
                merged.append(out)
            paths = merged
        for _ in _unique(paths, repeated):
            pass
        return repeated

    def _report(self, repeated: set[bytes]) -> None:
        """Each occurrence of a repeated id after its first, in stream order."""
        occurrences: dict[bytes, list[tuple[int, int]]] = {}
        for run in self._runs:
            stored = run.path.read_bytes().split(b"\n")
            stored.pop()  # after the last LF
            ranks = array("I")
            ranks.frombytes(run.path.with_suffix(".pos").read_bytes())
            for line in repeated:
                at = bisect.bisect_left(stored, line[:-1])
                if at < len(ranks) and stored[at] == line[:-1]:
                    occurrences.setdefault(line, []).append(run.place(ranks[at]))
        later = sorted(
            (place, line) for line, places in occurrences.items() for place in places[1:]
        )
        for (segment, seq), line in later:
            event_id = line[:-1].decode("unicode_escape")
            self._segments[segment](seq, "duplicate-id", f"event id {event_id!r} was used before")


def _unique(paths: Iterable[Path], repeated: set[bytes]) -> Iterator[bytes]:
    """The lines of sorted files merged, each once; lines in more than one go to
    `repeated` (each file holds a line at most once)."""
    files = [path.open("rb") for path in paths]
    try:
        previous = None
        for line in heapq.merge(*files):
            if line == previous:
                repeated.add(line)
                continue
            previous = line
            yield line
    finally:
        for f in files:
            f.close()
