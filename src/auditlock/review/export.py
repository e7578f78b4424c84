"""Hive-partitioned exports of verified events (docs/review.md, "Exports").

`export(engine, out, fmt)` writes the rows of the view `events` under
`OUT/date=YYYY-MM-DD/stream=STREAM/` (the event's UTC date; stream ids need no escaping,
FORMAT.md section 2), the layout BigQuery, Athena, Spark and DuckDB read as partitions
without being told more. The partition columns live in the paths, not in the files
(the Hive convention those readers expect). Parquet and JSON Lines are written by DuckDB
itself; OCSF rows are mapped in Python (ocsf.py), one file per partition, in order.
"""

from __future__ import annotations

import calendar
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from auditlock.review.formats import texts_for_times
from auditlock.review.schema import sql_string

EXPORT_FORMATS = ("parquet", "jsonl", "ocsf")
# The event's UTC date from the exact time: `time` is a TIMESTAMPTZ, which DuckDB would
# format in the session's time zone (the auditor's, not UTC).
_DATE = "strftime(make_timestamp_ns(time_ns), '%Y-%m-%d')"
_DAY_NS = 86_400 * 1_000_000_000
_OPTIONS = {
    "parquet": ("parquet", "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"),
    "jsonl": ("json", "FORMAT json"),
}


class ExportError(Exception):
    """The export cannot be written as asked (the message says why)."""


def export(
    con: Any, out: Path, fmt: str, product_version: str, workers: int | None = None
) -> dict[str, int]:
    """Write the view `events` to `out` (which must be missing or empty); return the
    rows per partition path (`date=.../stream=...`).

    `workers` partitions are written at a time (default: DuckDB's `threads`), each by a
    cursor of `con`, which must hold `events` as a view of its database (engine.py)."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    partitions = con.execute(
        f"SELECT {_DATE} AS date, stream, count(*) FROM events GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    counts = {f"date={date}/stream={stream}": int(n) for date, stream, n in partitions}
    if fmt == "ocsf":
        _export_ocsf(con, out, product_version)
        return counts
    if workers is None:
        workers = int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])
    _write_partitions(con, out, fmt, [(d, s) for d, s, _ in partitions], max(1, workers))
    return counts


def _write_partitions(
    con: Any, out: Path, fmt: str, partitions: list[tuple[str, str]], workers: int
) -> None:
    """One plain COPY per partition into its own file, `workers` side by side.

    DuckDB's own PARTITION_BY takes about twice the CPU of these COPYs (measured in
    docs/benchmarks.md, "Review"): it routes every row through a buffer per open
    partition. Here each COPY reads only its partition's rows: the cache's Parquet parts
    hold one stream after another, so their statistics on `stream` and `time_ns` skip
    the rest. The partition columns live in the path, not in the file (Hive)."""
    extension, options = _OPTIONS[fmt]
    columns = "* EXCLUDE (trail, stream)"
    if fmt == "jsonl":
        columns = texts_for_times(con.sql(f"SELECT {columns} FROM events"))
    # Rows need no order inside a partition's file; keeping it costs a third of the time.
    con.execute("SET preserve_insertion_order = false")

    def write(cursor: Any, date: str, stream: str) -> None:
        start = calendar.timegm(time.strptime(date, "%Y-%m-%d")) * 1_000_000_000
        directory = out / f"date={date}" / f"stream={stream}"
        directory.mkdir(parents=True)
        cursor.execute(
            f"COPY (SELECT {columns} FROM events WHERE stream = {sql_string(stream)} "
            f"AND time_ns >= {start} AND time_ns < {start + _DAY_NS}) "
            f"TO {sql_string(str(directory / f'part-0.{extension}'))} ({options})"
        )

    if workers == 1 or len(partitions) < 2:
        for date, stream in partitions:
            write(con, date, stream)
        return
    cursors = [con.cursor() for _ in range(workers)]
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="export") as pool:
            futures = [
                pool.submit(_run_share, write, cursors[i], partitions[i::workers])
                for i in range(workers)
            ]
            for future in futures:
                future.result()
    finally:
        for cursor in cursors:
            cursor.close()


def _run_share(write: Any, cursor: Any, share: list[tuple[str, str]]) -> None:
    for date, stream in share:
        write(cursor, date, stream)


def _export_ocsf(con: Any, out: Path, product_version: str) -> None:
    import orjson

    from auditlock.review.ocsf import rows, to_ocsf

    query = f"SELECT *, {_DATE} AS date FROM events ORDER BY date, stream, time_ns"
    current: tuple[str, str] | None = None
    sink = None
    try:
        for row in rows(con, query):
            place = (row["date"], row["stream"])
            if place != current:
                if sink is not None:
                    sink.close()
                directory = out / f"date={place[0]}" / f"stream={place[1]}"
                directory.mkdir(parents=True, exist_ok=True)
                sink = (directory / "part-0.ocsf.jsonl").open("wb")
                current = place
            assert sink is not None
            sink.write(orjson.dumps(to_ocsf(row, product_version)) + b"\n")
    finally:
        if sink is not None:
            sink.close()
