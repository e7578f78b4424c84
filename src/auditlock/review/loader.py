"""Load a trail for review: verify it, keep exactly the events verification accepted.

`load(url, options)` is the one way review commands read a destination:

1. compute the trail's cache key (cache.py: one listing, one small read per epoch) and,
   unless told not to, answer from a cache entry with that key;
2. otherwise run `ledger.verify` on the destination, the same verification as
   `auditlock verify`, with `on_accepted`: verification hands over each run of lines a
   signed checkpoint root vouched for, and nothing else;
3. turn those lines into rows of the `events` table (schema.py) inside DuckDB, one JSON
   parse per line, in a second thread while verification goes on, written as Parquet
   files of at most `batch_bytes` of lines each (so memory does not grow with the trail);
4. say what was excluded: per stream, the events stored in segments that are not in the
   table, and the findings and warnings that explain them (exclusions.py).

The result is a `LoadedTrail`: the Parquet files, the verify report (JSON form) and the
exclusions, the same whether it came from the cache or from the store.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify_context import DEFAULT_SLACK_SECONDS
from auditlock.review import cache
from auditlock.review.exclusions import exclusions, stored_events
from auditlock.review.schema import row_sql, sql_string

DEFAULT_BATCH_BYTES = 32 << 20  # lines per Parquet part: bounds the loader's memory
DEFAULT_MEMORY_LIMIT = "512MB"  # DuckDB's own limit for queries; beyond it, it spills
LOADER_MEMORY_LIMIT = "256MB"  # the loader's DuckDB (rows of one batch at a time)


@dataclass
class LoadOptions:
    public_keys: list[Ed25519PublicKey] = field(default_factory=list)
    use_cache: bool = True  # False: verify from the store, ignore and leave the cache alone
    cache_root: Path | None = None  # None: cache.default_root()
    batch_bytes: int = DEFAULT_BATCH_BYTES
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    threads: int = 1  # DuckDB threads while verification runs on another core
    slack_seconds: float | None = None  # verify's --slack; None: its default


@dataclass
class LoadedTrail:
    url: str
    files: list[Path]  # Parquet parts of the `events` table
    report: dict[str, Any]  # VerifyReport.to_json() of the verification the rows come from
    excluded: dict[str, Any]  # exclusions.exclusions()
    events: int  # rows in the table
    verified_at: str  # when that verification ran (RFC 3339)
    from_cache: bool
    cache_note: str = ""  # why the cache was not used, when it was not
    _cleanup: tempfile.TemporaryDirectory[str] | None = None

    @property
    def passed(self) -> bool:
        return self.report.get("result") == "PASS"

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cleanup()
            self._cleanup = None

    def summary_json(self) -> dict[str, Any]:
        """What a review command prints about where its answers come from."""
        return {
            "url": self.url,
            "result": self.report.get("result"),
            "trust": self.report.get("trust"),
            "verified_at": self.verified_at,
            "from_cache": self.from_cache,
            "events_accepted": self.events,
            "excluded": self.excluded,
            "findings": self.report.get("findings", []),
            "warnings": self.report.get("warnings", []),
        }


def load(url: str, options: LoadOptions | None = None) -> LoadedTrail:
    """Verify the trail at `url` (or find it in the cache) and return its accepted events.

    Raises sinks.DestinationError when the store cannot be listed or read at all."""
    from auditlock import sinks

    opt = options or LoadOptions()
    destination = sinks.open(url)
    state = cache.trail_state(destination, opt.public_keys)
    root: Path | None = None
    note = ""
    if opt.use_cache:
        try:
            root = cache.check_root(opt.cache_root or cache.default_root(), _trail_root(url))
        except (cache.CacheUnsafe, OSError) as exc:
            note = f"cache not used: {exc}"
        if root is not None:
            entry = cache.lookup(root, state.key)
            slack = DEFAULT_SLACK_SECONDS if opt.slack_seconds is None else opt.slack_seconds
            if entry is not None and state.usable(time.time_ns(), slack):
                return _from_entry(url, entry)
            if entry is not None:
                note = "cache not used: an open stream's heartbeat is overdue since it was verified"
    else:
        note = "cache not used: --no-cache"
    return _verify_and_load(destination, state, opt, root, note)


def _trail_root(url: str) -> Path | None:
    if not url.startswith("file:"):
        return None
    from auditlock.sinks.file import path_from_url

    return path_from_url(url)


def _from_entry(url: str, entry: cache.Entry) -> LoadedTrail:
    m = entry.manifest
    return LoadedTrail(
        url=url,
        files=entry.files,
        report=m["report"],
        excluded=m["excluded"],
        events=m["events"],
        verified_at=m["verified_at"],
        from_cache=True,
    )


def _verify_and_load(
    destination: Any, state: cache.TrailState, opt: LoadOptions, root: Path | None, note: str
) -> LoadedTrail:
    from auditlock.ledger.verify import VerifyOptions, verify

    cleanup: tempfile.TemporaryDirectory[str] | None = None
    staging: cache.Staging | None = None
    if root is not None:
        staging = cache.Staging(root, state.key)
        out = staging.path
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="auditlock-review-")
        out = Path(cleanup.name)
    writer = _PartWriter(out, opt)
    started = time.time_ns()
    try:
        verify_options = VerifyOptions(public_keys=opt.public_keys, on_accepted=writer.accept)
        if opt.slack_seconds is not None:
            verify_options.slack_seconds = opt.slack_seconds
        writer.start()
        try:
            report = verify(destination, verify_options)
        finally:
            writer.finish()
        report_json = report.to_json()
        excluded = exclusions(report_json, stored_events(state.names), writer.accepted)
        manifest = {
            "url": destination.url,
            "anchors": list(state.anchors),
            "verified_at": format_ns(started),
            "events": writer.rows,
            "files": [p.name for p in writer.files],
            "report": report_json,
            "excluded": excluded,
        }
    except BaseException:
        if staging is not None:
            staging.discard()
        if cleanup is not None:
            cleanup.cleanup()
        raise
    if staging is not None and root is not None:
        entry = staging.commit(manifest)
        cache.prune(root, destination.url, list(state.anchors), state.key)
        return LoadedTrail(
            url=destination.url, files=entry.files, report=report_json, excluded=excluded,
            events=writer.rows, verified_at=manifest["verified_at"], from_cache=False,
            cache_note=note,
        )  # fmt: skip
    return LoadedTrail(
        url=destination.url, files=writer.files, report=report_json, excluded=excluded,
        events=writer.rows, verified_at=manifest["verified_at"], from_cache=False,
        cache_note=note, _cleanup=cleanup,
    )  # fmt: skip


class _PartWriter:
    """Accepted lines -> Parquet parts, in a thread of its own (DuckDB releases the GIL,
    so the rows are built on another core while verification continues).

    A position of an epoch is accepted once: verification can vouch for the same lines
    twice when a store holds a copy of a segment under an overlapping name (it is
    reported as `segment-overlap`), and the table must hold each event once."""

    def __init__(self, out: Path, opt: LoadOptions) -> None:
        self.out = out
        self.opt = opt
        # The batch being filled: the lines' bytes back to back, and where each ends.
        self.chunks: list[bytes] = []
        self.ends = array("q", [0])
        self.batch_bytes = 0
        self.queue: queue.Queue[tuple[list[bytes], array[int]] | None] = queue.Queue(maxsize=1)
        self.files: list[Path] = []
        self.rows = 0
        self.accepted: dict[str, int] = {}  # stream -> rows
        self.next_position: dict[tuple[str, int], int] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="review-loader", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def accept(self, stream: str, epoch: int, first: int, lines: list[bytes]) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing the events table failed: {self.error}")
        place = (stream, epoch)
        seen = self.next_position.get(place, 0)
        if first < seen:
            lines = lines[seen - first :]
            first = seen
        if not lines:
            return
        self.next_position[place] = first + len(lines)
        self.accepted[stream] = self.accepted.get(stream, 0) + len(lines)
        # One copy of the lines now, so verification's own line objects can go; the
        # batch is handed to Arrow as these bytes and their offsets, without a copy.
        ends = accumulate(map(len, lines), initial=self.batch_bytes)
        next(ends)
        self.ends.extend(ends)
        chunk = b"".join(lines)
        self.chunks.append(chunk)
        self.batch_bytes += len(chunk)
        if self.batch_bytes >= self.opt.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.chunks:
            self.queue.put((self.chunks, self.ends))
            self.chunks, self.ends, self.batch_bytes = [], array("q", [0]), 0

    def finish(self) -> None:
        self._flush()
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"writing the events table failed: {self.error}") from self.error

    def _run(self) -> None:
        import duckdb
        import pyarrow as pa

        try:
            con = duckdb.connect(config={"threads": self.opt.threads})
            con.execute(f"SET memory_limit = '{LOADER_MEMORY_LIMIT}'")
            con.execute("SET temp_directory = ?", [str(self.out / ".spill")])
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET enable_progress_bar = false")  # it writes to stdout
        except BaseException as exc:
            self.error = exc
            self._drain()
            return
        while True:
            batch = self.queue.get()
            if batch is None:
                break
            if self.error is not None:
                continue
            try:
                chunks, ends = batch
                batch = None
                data = pa.py_buffer(b"".join(chunks))
                del chunks
                count = len(ends) - 1
                lines = pa.LargeStringArray.from_buffers(count, pa.py_buffer(ends), data)
                path = self.out / f"part-{len(self.files):06d}.parquet"
                con.register("accepted_lines", pa.table({"line": lines}))
                con.execute(
                    f"COPY ({row_sql('accepted_lines')}) TO {sql_string(str(path))} "
                    "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, "
                    "ROW_GROUP_SIZE 122880)"
                )
                con.unregister("accepted_lines")
                del lines, data
                self.files.append(path)
                self.rows += count
            except BaseException as exc:
                self.error = exc
        con.close()

    def _drain(self) -> None:
        while self.queue.get() is not None:
            pass
