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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditlock.review.loader import LoadedTrail, LoadOptions, load

__all__ = ["LoadOptions", "LoadedTrail", "load"]


def __getattr__(name: str) -> Any:
    """The loader is imported on first use (PEP 562): `auditlock --help` and the modules
    that only need the table's schema or formats stay light."""
    if name in __all__:
        from auditlock.review import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
