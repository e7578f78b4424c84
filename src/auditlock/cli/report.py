"""`auditlock report URL... --out report.html`: the auditor's report (docs/review.md).

Each URL is read through verification (or the cache of an earlier verification of the
same trail), like `auditlock query`; the report shows only accepted events and says what
was excluded. Exit codes are verify's: 0 every trail verified, 1 findings (the report is
still written, and shows them), 2 usage or I/O error, 3 the command failed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from auditlock.cli.review_common import (
    UsageError,
    add_trail_options,
    finish,
    run_guarded,
    trusted_keys,
    verified_trails,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report (plots, privileged changes, SOC 2 map)",
        description="Verify each URL (or reuse the cache of an earlier verification) and "
        "write one HTML file with no script and no external resource: the verification "
        "summary, plots of activity, failures, actors, Secret reads, configuration changes "
        "and checkpoint cadence, tables of privileged changes and a SOC 2 control map. "
        "Prints to PDF from any browser. Exit 0: every trail verified; 1: findings (the "
        "report is written and lists them); 2: usage or I/O error; 3: the command failed.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL")
    add_period_options(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="report.html")
    parser.add_argument("--title", default=None, help="the report's title")
    add_trail_options(parser)
    parser.set_defaults(func=lambda args: run_guarded(args, _run))


def add_period_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="RFC3339", help="events at or after this time")
    parser.add_argument("--until", metavar="RFC3339", help="events before this time")


def period(args: argparse.Namespace) -> tuple[int | None, int | None]:
    from auditlock.ledger.verify import parse_time_option

    try:
        since = parse_time_option(args.since) if args.since else None
        until = parse_time_option(args.until) if args.until else None
    except ValueError as exc:
        raise UsageError(f"--since/--until: {exc}") from None
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be later than --since")
    return since, until


def write_atomically(path: Path, data: bytes) -> None:
    """The whole file or none: a half-written report must never be handed on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from auditlock.report import render_report
    from auditlock.report.build import DEFAULT_TITLE

    since, until = period(args)
    keys = trusted_keys(args)
    with verified_trails(args) as trails:
        text = render_report(
            trails, since_ns=since, until_ns=until, anchors=keys,
            title=args.title or DEFAULT_TITLE, memory_limit=args.memory_limit,
        )  # fmt: skip
    data = text.encode()
    write_atomically(args.out, data)
    return finish(
        args,
        trails,
        f"report: {args.out} ({len(data):,} bytes)",
        out=str(args.out),
        bytes=len(data),
    )
