"""Review: answers from verified trails (docs/review.md).

The stage after the ledger: `load` (loader.py) verifies a destination with
`ledger.verify` and keeps exactly the events verification accepted, as the `events`
table (schema.py), cached by checkpoint (cache.py); `engine.py` queries one or more
loaded trails with DuckDB; `formats/` writes answers (table, JSON Lines, CSV, OCSF,
Parquet); `export.py` writes Hive-partitioned files; `trace.py` correlates ids across
streams. Heavy libraries (duckdb, pyarrow) are imported inside the functions that use
them, so `auditlock --help` stays fast.
"""

from __future__ import annotations

from auditlock.review.loader import LoadedTrail, LoadOptions, load

__all__ = ["LoadOptions", "LoadedTrail", "load"]
