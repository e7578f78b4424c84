"""`auditlock export URL... --format parquet|jsonl|ocsf --out DIR`: verified events as
Hive-partitioned files (date=YYYY-MM-DD/stream=...) that BigQuery, Athena, Spark and
DuckDB read as they are (docs/review.md, "Exports")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from auditlock.cli.review_common import (
    UsageError,
    add_trail_options,
    finish,
    run_guarded,
    verified_trails,
)


def register(subparsers: Any) -> None:
    from auditlock.cli.query import add_filter_options
    from auditlock.review.export import EXPORT_FORMATS

    parser = subparsers.add_parser(
        "export",
        help="write verified events as Hive-partitioned Parquet, JSON Lines or OCSF",
        description="Verify each URL (or reuse the cache) and write the accepted events "
        "(narrowed by the same filters as query) under DIR/date=YYYY-MM-DD/stream=S/. "
        "DIR must be missing or empty. Exit codes as query.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="parquet")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    add_trail_options(parser)
    add_filter_options(parser)
    parser.set_defaults(func=lambda args: run_guarded(args, _run))


def _run(args: argparse.Namespace) -> int:
    from auditlock import __version__
    from auditlock.cli.query import filters_from
    from auditlock.review.engine import Engine
    from auditlock.review.export import ExportError, export

    filters = filters_from(args)
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty directory")
    with (
        verified_trails(args) as trails,
        Engine(trails, filters, memory_limit=args.memory_limit) as engine,
    ):
        try:
            partitions = export(engine.con, out, args.format, __version__)
        except ExportError as exc:
            raise UsageError(str(exc)) from None
    events = sum(partitions.values())
    return finish(
        args, trails, f"wrote {events} events in {len(partitions)} partitions to {out}",
        out=str(out), format=args.format, events=events, partitions=partitions,
    )  # fmt: skip
