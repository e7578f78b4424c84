"""`auditlock trace ID URL...`: every verified event, in any of the trails, that shares a
request id, trace id or Kubernetes audit id with ID, in time order (docs/review.md)."""

from __future__ import annotations

import argparse
import shutil
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
    from auditlock.review.formats import FORMATS

    parser = subparsers.add_parser(
        "trace",
        help="every verified event sharing a request, trace or Kubernetes audit id",
        description="List, in time order, every event accepted by verification in the "
        "given trails (app, access proxy, API server: any stream) whose request_id, "
        "trace_id or Kubernetes audit id is ID. Exit codes as query.",
    )
    parser.add_argument("id", metavar="ID")
    parser.add_argument("urls", nargs="+", metavar="URL")
    add_trail_options(parser)
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--out", type=Path, metavar="FILE")
    parser.set_defaults(func=lambda args: run_guarded(args, _run))


def _run(args: argparse.Namespace) -> int:
    from auditlock.cli.query import emit_text, json_rows, write_rows
    from auditlock.review import formats
    from auditlock.review.engine import Engine
    from auditlock.review.trace import trace_query, trace_table_query

    if not args.id:
        raise UsageError("ID must not be empty")
    with verified_trails(args) as trails, Engine(trails, memory_limit=args.memory_limit) as engine:
        query = trace_query(args.id)
        if args.json:
            _, rows = json_rows(engine, query)
            return finish(args, trails, id=args.id, events=rows)
        if args.format != "table":
            return finish(args, trails, lambda: write_rows(engine, query, args.format, args.out))
        width = shutil.get_terminal_size((120, 24)).columns
        text, total = formats.table(engine.con, trace_table_query(args.id), width, 10_000)
        answer = f"{text}\n({total} events share {args.id})"
        return finish(args, trails, lambda: emit_text(args, answer))
