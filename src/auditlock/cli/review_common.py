"""What every review command (query, trace, export, report) shares: the trail options, loading
through verification (auditlock.review.load), and saying what was verified and excluded.

Exit codes are verify's: 0 every trail verified, 1 a trail has findings (answers come
from the events verification accepted; the rest are excluded and named), 2 usage or
I/O error, 3 the command itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from auditlock.cli.main import (
    EXIT_CRASH,
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    add_pem_files_option,
)


class UsageError(Exception):
    """Bad flags or an unreadable store: exit 2 with this message."""


def add_trail_options(parser: argparse.ArgumentParser) -> None:
    add_pem_files_option(
        parser,
        "--public-key",
        help="trusted public key (repeatable), as in verify; without it, the stored keys",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="verify from the store again and neither read nor write the local cache",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the cache of verified events (default $AUDITLOCK_CACHE_DIR, else "
        "~/.cache/auditlock/review); must be yours and writable by nobody else",
    )
    parser.add_argument(
        "--memory-limit",
        default="512MB",
        metavar="SIZE",
        help="DuckDB's memory limit; beyond it, it spills to a temporary directory",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run_guarded(args: argparse.Namespace, body: Callable[[argparse.Namespace], int]) -> int:
    """Run a review command: usage errors exit 2, anything unforeseen exits 3."""
    try:
        return body(args)
    except UsageError as exc:
        return error(args, EXIT_USAGE, str(exc))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return error(args, EXIT_CRASH, f"{args.command} failed ({type(exc).__name__}: {exc})")


def trusted_keys(args: argparse.Namespace) -> list[Any]:
    """The --public-key anchors; UsageError if one cannot be read."""
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import load_public_key

    try:
        return [load_public_key(path) for path in args.public_key]
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None


def load_trails(args: argparse.Namespace, urls: list[str]) -> list[Any]:
    """Load each URL through verification (or the cache); UsageError if one cannot be read."""
    from auditlock import sinks
    from auditlock.review import LoadOptions, load

    options = LoadOptions(
        public_keys=trusted_keys(args),
        use_cache=not args.no_cache,
        cache_root=args.cache_dir,
        memory_limit=args.memory_limit,
    )
    trails = []
    for url in urls:
        try:
            destination_root = _file_root(url)
            if destination_root is not None and not destination_root.is_dir():
                raise UsageError(f"{url}: no such directory {destination_root}")
            trails.append(load(url, options))
        except sinks.DestinationError as exc:
            raise UsageError(str(exc)) from None
    return trails


@contextlib.contextmanager
def verified_trails(args: argparse.Namespace) -> Iterator[list[Any]]:
    """The trails of `args.urls`, loaded as `load_trails` does and closed on leaving."""
    trails = load_trails(args, args.urls)
    try:
        yield trails
    finally:
        for trail in trails:
            trail.close()


def verdict(trails: list[Any]) -> str:
    """The --json `result` of a review command."""
    return "PASS" if all(t.passed for t in trails) else "FAIL"


def _file_root(url: str) -> Path | None:
    if not url.startswith("file:"):
        return None
    from auditlock.sinks.file import path_from_url

    try:
        return path_from_url(url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def exit_code(trails: list[Any]) -> int:
    return EXIT_OK if all(t.passed for t in trails) else EXIT_FINDINGS


def describe(trail: Any) -> str:
    """Where the answers come from, for a person (stderr): verdict, trust, exclusions."""
    from auditlock.ledger.escape import escape

    source = (
        f"from the cache, verified {trail.verified_at}"
        if trail.from_cache
        else f"verified now ({trail.verified_at})"
    )
    lines = [
        f"{trail.report.get('result')}: {escape(trail.url)}: {trail.events} events accepted, "
        f"{source}",
        f"  trust: {escape(str(trail.report.get('trust')))}",
    ]
    if trail.cache_note:
        lines.append(f"  {escape(trail.cache_note)}")
    excluded = trail.excluded
    if excluded["events"] or excluded["streams"] or excluded["trail_findings"]:
        lines.append(
            f"  excluded: {excluded['events']} stored events are not in the answers "
            "(verification did not accept them):"
        )
        for stream in excluded["streams"]:
            lines.append(
                f"    stream {escape(stream['stream'])}: {stream['excluded']} of "
                f"{stream['stored']} stored events excluded"
            )
            for reason in stream["reasons"][:20]:
                lines.append(f"      {reason['kind']}: {_reason(reason)}")
            if len(stream["reasons"]) > 20:
                lines.append(f"      ... {len(stream['reasons']) - 20} more (see --json)")
        for finding in excluded["trail_findings"][:20]:
            lines.append(f"    trail finding: {_reason(finding)}")
    return "\n".join(lines)


def _reason(item: dict[str, Any]) -> str:
    from auditlock.ledger.report import Finding

    fields = {k: item.get(k) for k in ("code", "message", "stream", "epoch", "first_seq",
                                       "last_seq", "object")}  # fmt: skip
    return Finding(**fields).describe()  # type: ignore[arg-type]


def print_summaries(trails: list[Any]) -> None:
    for trail in trails:
        print(describe(trail), file=sys.stderr)


def finish(
    args: argparse.Namespace,
    trails: list[Any],
    answer: str | Callable[[], object] = "",
    **document: Any,
) -> int:
    """How every review command ends; returns its exit code. With --json, one document:
    the verdict, each trail's summary, then `document` (docs/review.md). Otherwise what
    was verified and excluded (stderr), then the `answer` (stdout): a line, or a function
    writing it."""
    if args.json:
        summaries = [t.summary_json() for t in trails]
        write_stdout(json.dumps({"result": verdict(trails), "trails": summaries, **document},
                                indent=1))  # fmt: skip
    else:
        print_summaries(trails)
        if callable(answer):
            answer()
        elif answer:
            write_stdout(answer)
    return exit_code(trails)


def error(args: argparse.Namespace, code: int, message: str) -> int:
    from auditlock.ledger.escape import escape

    print(f"error: {escape(message)}", file=sys.stderr)
    if getattr(args, "json", False):
        write_stdout(json.dumps({"result": "ERROR", "exit_code": code, "error": message}, indent=2))
    return code


def write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `query ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
