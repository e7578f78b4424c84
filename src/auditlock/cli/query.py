"""`auditlock query URL...`: ask a verified trail questions (docs/review.md).

Every URL is read through verification (or the cache of an earlier verification of the
same trail); only accepted events are in the `events` table, and what was excluded is
said on stderr (and in --json). Filters narrow the view `events`; `--sql` queries it
(and `all_events`, the same without the filters).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from auditlock.cli.review_common import (
    UsageError,
    add_trail_options,
    finish,
    run_guarded,
    verified_trails,
    write_stdout,
)
from auditlock.ledger.vocabulary import CATEGORIES

OUTCOMES = ("success", "failure", "unknown")
DEFAULT_QUERY = "SELECT * EXCLUDE (event_json) FROM events ORDER BY {order}"


def register(subparsers: Any) -> None:
    from auditlock.review.formats import FORMATS

    parser = subparsers.add_parser(
        "query",
        help="query verified events (filters, SQL; table, jsonl, csv, ocsf, parquet)",
        description="Verify each URL (file://DIR, s3://bucket/prefix, gs://bucket/prefix), "
        "or reuse the cache of an earlier verification of the same trail, and answer from "
        "the events verification accepted. Text flags match exactly, or as a glob with "
        "* ? [. Exit 0: every trail verified; 1: findings (answers exclude what was not "
        "accepted, named on stderr); 2: usage or I/O error; 3: the command failed.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL")
    add_trail_options(parser)
    add_filter_options(parser)
    parser.add_argument(
        "--sql",
        metavar="QUERY",
        help="a DuckDB SELECT over the view `events` (filtered) or `all_events` "
        "(docs/review.md lists the columns)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="write to FILE (default: standard output)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="at most N rows (default: 50 for the table format, else all)",
    )
    parser.set_defaults(func=lambda args: run_guarded(args, _run))


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="RFC3339", help="events at or after this time")
    parser.add_argument("--until", metavar="RFC3339", help="events before this time")
    parser.add_argument(
        "--category", action="append", default=[], choices=CATEGORIES, help="(repeatable)"
    )
    parser.add_argument("--action", action="append", default=[], help="(repeatable)")
    parser.add_argument(
        "--outcome", action="append", default=[], choices=OUTCOMES, help="(repeatable)"
    )
    parser.add_argument("--actor", action="append", default=[], help="actor name (repeatable)")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        help="target name, resource, or resource/name (repeatable)",
    )
    parser.add_argument("--stream", action="append", default=[], help="stream id (repeatable)")
    parser.add_argument("--request-id", action="append", default=[], help="(repeatable)")
    parser.add_argument("--trace-id", action="append", default=[], help="(repeatable)")


def filters_from(args: argparse.Namespace) -> Any:
    from auditlock.ledger.timestamps import normalize_time, parse_ns
    from auditlock.review.engine import Filters

    try:
        since = parse_ns(normalize_time(args.since)) if args.since else None
        until = parse_ns(normalize_time(args.until)) if args.until else None
    except ValueError as exc:
        raise UsageError(f"--since/--until: {exc}") from None
    return Filters(
        since_ns=since, until_ns=until, categories=args.category, actions=args.action,
        outcomes=args.outcome, actors=args.actor, targets=args.target, streams=args.stream,
        request_ids=args.request_id, trace_ids=args.trace_id,
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from auditlock.review.engine import TIME_ORDER, Engine

    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    if args.format == "parquet" and args.out is None and sys.stdout.isatty():
        raise UsageError("--format parquet writes binary: give --out FILE or redirect stdout")
    filters = filters_from(args)
    with (
        verified_trails(args) as trails,
        Engine(trails, filters, memory_limit=args.memory_limit) as engine,
    ):
        query = args.sql or DEFAULT_QUERY.format(order=TIME_ORDER)
        if args.format == "ocsf" and not args.sql:
            query = f"SELECT * FROM events ORDER BY {TIME_ORDER}"
        _check_sql(engine, query)
        if args.json:
            columns, rows = json_rows(engine, query, args.limit)
            return finish(args, trails, columns=columns, rows=rows)
        return finish(args, trails, lambda: _write(engine, query, args))


def _check_sql(engine: Any, query: str) -> None:
    import duckdb

    try:
        engine.sql(query).columns  # noqa: B018  (binds the query: errors surface here)
    except duckdb.Error as exc:
        raise UsageError(f"--sql: {exc}") from None


def _write(engine: Any, query: str, args: argparse.Namespace) -> None:
    from auditlock.review import formats

    limit = args.limit
    if args.format == "table":
        width = shutil.get_terminal_size((120, 24)).columns
        text, total = formats.table(engine.con, query, width, 50 if limit is None else limit)
        shown = min(total, 50 if limit is None else limit)
        footer = f"({total} rows" + (f", first {shown} shown; --limit N" if shown < total else "")
        emit_text(args, text + "\n" + footer + ")")
        return
    if limit is not None:
        query = f"SELECT * FROM ({query}) LIMIT {int(limit)}"
    write_rows(engine, query, args.format, args.out)


def write_rows(engine: Any, query: str, format: str, out: Path | None) -> None:
    """The rows of `query` in a file format (not the table) to `out` or standard output."""
    from auditlock.review import formats

    if format == "ocsf":
        write_ocsf(engine, query, out)
        return
    formats.copy_to(engine.con, query, format, out or binary_stdout())
    sys.stdout.flush()


class _TextSink:
    """Bytes onto a text stream without a binary buffer (a redirected sys.stdout)."""

    def write(self, data: bytes) -> int:
        return sys.stdout.write(data.decode("utf-8"))


def binary_stdout() -> Any:
    return getattr(sys.stdout, "buffer", None) or _TextSink()


def write_ocsf(engine: Any, query: str, out: Path | None) -> None:
    from auditlock import __version__
    from auditlock.review import ocsf

    missing = ocsf.REQUIRED_COLUMNS - set(engine.sql(query).columns)
    if missing:
        raise UsageError(
            "--format ocsf needs rows of the events table (SELECT * FROM events ...); "
            f"missing columns: {', '.join(sorted(missing))}"
        )
    if out is None:
        ocsf.write(engine.con, query, binary_stdout(), __version__)
        return
    with out.open("wb") as sink:
        ocsf.write(engine.con, query, sink, __version__)


def emit_text(args: argparse.Namespace, text: str) -> None:
    """A text answer (the table) to --out FILE or standard output."""
    if args.out is not None:
        args.out.write_text(text + "\n")
    else:
        write_stdout(text)


def json_rows(engine: Any, query: str, limit: int | None = None) -> tuple[list[str], list[Any]]:
    """The columns of `query` and its rows as JSON objects (times as RFC 3339 text)."""
    from auditlock.review.formats import texts_for_times

    relation = engine.sql(query)
    select = f"SELECT to_json(r) FROM (SELECT {texts_for_times(relation)} FROM ({query})) r"
    if limit is not None:
        select += f" LIMIT {int(limit)}"
    return list(relation.columns), [json.loads(text) for (text,) in engine.sql(select).fetchall()]
