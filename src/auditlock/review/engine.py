"""Queries over loaded trails with DuckDB (docs/review.md, "Queries").

`connect(trails)` opens an in-memory DuckDB with a bounded memory limit (it spills to a
temporary directory beyond it) and the view `all_events`: the `events` table of every
trail given (schema.py), with the column `trail` (the destination URL) added. `Filters`
narrows it to the view `events`, which `--sql` and every output format read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditlock.review.loader import DEFAULT_MEMORY_LIMIT, LoadedTrail
from auditlock.review.schema import COLUMNS, sql_string

# The order `query` and `trace` print rows in: time, then the ledger's own order.
TIME_ORDER = "time_ns, trail, stream, epoch, seq"


@dataclass
class Filters:
    """The common flags of `auditlock query`; empty lists match everything.

    Text flags match exactly, or as a glob when they contain `*`, `?` or `[`."""

    since_ns: int | None = None  # inclusive
    until_ns: int | None = None  # exclusive
    categories: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)  # actor_name
    targets: list[str] = field(default_factory=list)  # name, resource, or resource/name
    streams: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)

    def where(self) -> str:
        """The SQL condition (literals quoted here: DuckDB views take no parameters)."""
        terms: list[str] = []
        if self.since_ns is not None:
            terms.append(f"time_ns >= {int(self.since_ns)}")
        if self.until_ns is not None:
            terms.append(f"time_ns < {int(self.until_ns)}")
        for columns, values in (
            (["category"], self.categories),
            (["action"], self.actions),
            (["outcome"], self.outcomes),
            (["actor_name"], self.actors),
            (["target_name", "target_resource", "target_resource || '/' || target_name"],
             self.targets),
            (["stream"], self.streams),
            (["request_id"], self.request_ids),
            (["trace_id"], self.trace_ids),
        ):  # fmt: skip
            if values:
                terms.append("(" + " OR ".join(_match(c, v) for c in columns for v in values) + ")")
        return " AND ".join(terms) or "TRUE"


def _match(column: str, value: str) -> str:
    if any(ch in value for ch in "*?["):
        return f"({column}) GLOB {sql_string(value)}"
    return f"({column}) = {sql_string(value)}"


class Engine:
    """A DuckDB connection over loaded trails (see the module docstring)."""

    def __init__(
        self,
        trails: Sequence[LoadedTrail],
        filters: Filters | None = None,
        *,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
        temp_dir: Path | None = None,
    ) -> None:
        import duckdb

        self._spill = tempfile.TemporaryDirectory(prefix="auditlock-duckdb-", dir=temp_dir)
        config: dict[str, Any] = {}
        if threads is not None:
            config["threads"] = threads
        self.con = duckdb.connect(config=config)
        self.con.execute(f"SET memory_limit = {sql_string(memory_limit)}")
        self.con.execute(f"SET temp_directory = {sql_string(self._spill.name)}")
        # DuckDB's progress bar writes to stdout, into the answer itself.
        self.con.execute("SET enable_progress_bar = false")
        # Answers are in UTC (docs/review.md); DuckDB would format and truncate the
        # TIMESTAMPTZ column `time` in the machine's time zone.
        self.con.execute("SET TimeZone = 'UTC'")
        # The views live in this private in-memory database (not TEMP), so the cursors
        # that export partitions side by side see them too.
        parts = []
        for trail in trails:
            if trail.files:
                files = "[" + ", ".join(sql_string(str(f)) for f in trail.files) + "]"
                url = sql_string(trail.url)
                parts.append(f"SELECT {url} AS trail, * FROM read_parquet({files})")
        if not parts:
            columns = ", ".join(f"{c.name} {c.sql_type}" for c in COLUMNS)
            self.con.execute(f"CREATE TABLE no_events ({columns})")
            parts.append("SELECT CAST(NULL AS VARCHAR) AS trail, * FROM no_events WHERE FALSE")
        self.con.execute("CREATE VIEW all_events AS " + " UNION ALL BY NAME ".join(parts))
        where = (filters or Filters()).where()
        self.con.execute(f"CREATE VIEW events AS SELECT * FROM all_events WHERE {where}")

    def sql(self, query: str) -> Any:
        """A DuckDB relation for `query` (over the views `events` and `all_events`)."""
        return self.con.sql(query)

    def close(self) -> None:
        self.con.close()
        self._spill.cleanup()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
