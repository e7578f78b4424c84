"""Hive-partitioned exports of verified events (docs/review.md, "Exports").

`export(engine, out, fmt)` writes the rows of the view `events` under
`OUT/date=YYYY-MM-DD/stream=STREAM/` (the event's UTC date; stream ids need no escaping,
FORMAT.md section 2), the layout BigQuery, Athena, Spark and DuckDB read as partitions
without being told more. The partition columns live in the paths, not in the files
(the Hive convention those readers expect). Parquet and JSON Lines are written by DuckDB
itself; OCSF rows are mapped in Python (ocsf.py), one file per partition, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditlock.review.formats import texts_for_times
from auditlock.review.schema import sql_string

EXPORT_FORMATS = ("parquet", "jsonl", "ocsf")
_DATE = "strftime(time, '%Y-%m-%d')"


class ExportError(Exception):
    """The export cannot be written as asked (the message says why)."""


def export(con: Any, out: Path, fmt: str, product_version: str) -> dict[str, int]:
    """Write the view `events` to `out` (which must be missing or empty); return the
    rows per partition path (`date=.../stream=...`)."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        f"date={date}/stream={stream}": int(n)
        for date, stream, n in con.execute(
            f"SELECT {_DATE} AS date, stream, count(*) FROM events GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    }
    if fmt == "ocsf":
        _export_ocsf(con, out, product_version)
        return counts
    columns = "* EXCLUDE (trail)"
    if fmt == "jsonl":
        columns = texts_for_times(con.sql("SELECT * EXCLUDE (trail) FROM events"))
    options = (
        "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"
        if fmt == "parquet"
        else "FORMAT json"
    ) + ", PARTITION_BY (date, stream), FILENAME_PATTERN 'part-{i}'"
    # Rows need no order across a partition's files; keeping it costs a third of the time.
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"COPY (SELECT {columns}, {_DATE} AS date FROM events) "
        f"TO {sql_string(str(out))} ({options})"
    )
    return counts


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
