"""Writing answers: table (a terminal), JSON Lines, CSV, Parquet, OCSF (docs/review.md,
"Output formats").

Files are written by DuckDB itself (COPY), into the file asked for or, for standard
output, into a temporary file then copied: DuckDB opening `/dev/stdout` would truncate a
redirected output file. Times are written as RFC 3339 text in UTC (`time` to the
nanosecond when the row has `time_ns`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

from auditlock.ledger.escape import escape
from auditlock.review.schema import sql_string

FORMATS = ("table", "jsonl", "csv", "parquet", "ocsf")
RFC3339_NS = "%Y-%m-%dT%H:%M:%S.%nZ"
RFC3339_US = "%Y-%m-%dT%H:%M:%S.%fZ"


def texts_for_times(relation: Any) -> str:
    """A SELECT list for `relation` with its timestamps as RFC 3339 text."""
    columns = list(relation.columns)
    out = []
    for name, kind in zip(columns, relation.types, strict=True):
        quoted = '"' + name.replace('"', '""') + '"'
        if name == "time" and "time_ns" in columns:
            out.append(f"strftime(make_timestamp_ns(time_ns), '{RFC3339_NS}') AS time")
        elif str(kind).startswith("TIMESTAMP"):
            out.append(f"strftime({quoted}, '{RFC3339_US}') AS {quoted}")
        else:
            out.append(quoted)
    return ", ".join(out)


def copy_to(con: Any, query: str, fmt: str, out: Path | IO[bytes]) -> None:
    """Write the rows of `query` as jsonl, csv or parquet to a path or a binary stream."""
    if fmt == "parquet":
        select = query
        options = "FORMAT parquet, COMPRESSION zstd"
    else:
        select = f"SELECT {texts_for_times(con.sql(query))} FROM ({query})"
        options = "FORMAT json" if fmt == "jsonl" else "FORMAT csv, HEADER"
    if isinstance(out, Path):
        con.execute(f"COPY ({select}) TO {sql_string(str(out))} ({options})")
        return
    with tempfile.TemporaryDirectory(prefix="auditlock-out-") as tmp:
        path = Path(tmp) / f"out.{fmt}"
        con.execute(f"COPY ({select}) TO {sql_string(str(path))} ({options})")
        with path.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)


def table(con: Any, query: str, width: int, limit: int) -> tuple[str, int]:
    """A text table of the first `limit` rows that fits `width` columns; and the row count.

    Cells are escaped for the terminal (escape.py): events are what senders wrote."""
    relation = con.sql(query)
    names = list(relation.columns)
    standard = {"time_ns", "stream", "category", "action", "outcome", "actor_name",
                "target_resource", "target_namespace", "target_name", "request_id",
                "trace_id", "audit_id"}  # fmt: skip
    if standard <= set(names):  # rows of the events table: the columns that fit a terminal
        shown = f"""SELECT strftime(make_timestamp_ns(time_ns), '{RFC3339_NS}') AS time,
            stream, category, action, outcome, actor_name AS actor,
            concat_ws('/', target_namespace, target_resource, target_name) AS target,
            coalesce(request_id, trace_id, audit_id) AS correlation
            FROM ({query})"""
    else:
        shown = f"SELECT {texts_for_times(relation)} FROM ({query})"
    total = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
    result = con.sql(f"{shown} LIMIT {int(limit)}")
    headers = list(result.columns)
    rows = [["" if v is None else escape(str(v)) for v in row] for row in result.fetchall()]
    return _fit(headers, rows, width), int(total)


def _fit(headers: list[str], rows: list[list[str]], width: int) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    budget = max(width - 2 * (len(headers) - 1), len(headers) * 4)
    floors = [min(len(h), 10) for h in headers]
    while sum(widths) > budget:  # shrink the widest column (the time last) until it fits
        others = [i for i in range(1, len(widths)) if widths[i] > floors[i]]
        widest = max(others or range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= 1:
            break
        widths[widest] -= 1

    def cell(text: str, w: int) -> str:
        return text.ljust(w) if len(text) <= w else text[: max(w - 1, 0)] + "…"

    lines = ["  ".join(cell(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(cell(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
