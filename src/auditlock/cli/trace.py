"""`auditlock trace ID URL...`: every verified event, in any of the trails, that shares a
request id, trace id or Kubernetes audit id with ID, in time order (docs/review.md)."""

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
    exit_code,
    print_summaries,
    run_guarded,
    verdict,
    verified_trails,
    write_stdout,
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
    from auditlock.cli.query import binary_stdout, write_ocsf
    from auditlock.review import formats
    from auditlock.review.engine import Engine
    from auditlock.review.trace import trace_query, trace_table_query

    if not args.id:
        raise UsageError("ID must not be empty")
    with verified_trails(args) as trails, Engine(trails, memory_limit=args.memory_limit) as engine:
        query = trace_query(args.id)
        if args.json:
            rows = [
                json.loads(text)
                for (text,) in engine.con.execute(
                    "SELECT to_json(r) FROM (SELECT "
                    f"{formats.texts_for_times(engine.sql(query))} FROM ({query})) r"
                ).fetchall()
            ]
            document = {
                "result": verdict(trails),
                "id": args.id,
                "trails": [t.summary_json() for t in trails],
                "events": rows,
            }
            write_stdout(json.dumps(document, indent=1))
        else:
            print_summaries(trails)
            if args.format == "table":
                width = shutil.get_terminal_size((120, 24)).columns
                table = trace_table_query(args.id)
                text, total = formats.table(engine.con, table, width, 10_000)
                write_stdout(f"{text}\n({total} events share {args.id})")
            elif args.format == "ocsf":
                write_ocsf(engine, query, args.out)
            else:
                formats.copy_to(engine.con, query, args.format, args.out or binary_stdout())
                sys.stdout.flush()
    return exit_code(trails)
