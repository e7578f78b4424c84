"""`auditlock verify URL`: verify a ledger offline. Exit 0 verified, 1 problems, 2 usage/I-O."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from auditlock.cli.main import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="verify a ledger offline (signatures, chains, Merkle roots, gaps, retention)",
        description="Verify every stream under URL (file://DIR, s3://bucket/prefix, "
        "gs://bucket/prefix). Exit 0: everything verified; 1: problems found (each named); "
        "2: usage or I/O error.",
    )
    parser.add_argument("url", metavar="URL")
    parser.add_argument(
        "--public-key",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="trusted public key (repeatable); without it, the stored keys are trusted",
    )
    parser.add_argument("--since", metavar="RFC3339", help="verify events from this time on")
    parser.add_argument("--until", metavar="RFC3339", help="verify events up to this time")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument(
        "--require-retention",
        type=float,
        metavar="DAYS",
        help="also fail any object not locked for at least DAYS after it was written",
    )
    parser.add_argument(
        "--slack",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="tolerance on top of the heartbeat interval before a time gap is a problem",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auditlock import sinks
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import load_public_key
    from auditlock.ledger.verify import VerifyOptions, parse_time_option, verify

    try:
        keys = [load_public_key(path) for path in args.public_key]
        options = VerifyOptions(
            public_keys=keys,
            since_ns=parse_time_option(args.since) if args.since else None,
            until_ns=parse_time_option(args.until) if args.until else None,
            slack_seconds=args.slack,
            require_retention_days=args.require_retention,
        )
    except KeyFileError as exc:
        return _usage(str(exc))
    except ValueError as exc:
        return _usage(f"--since/--until: {exc}")
    try:
        destination = sinks.open(args.url)
        _check_exists(destination)
        report = verify(destination, options)
    except sinks.DestinationError as exc:
        return _usage(str(exc))
    code = EXIT_OK if report.ok else EXIT_FINDINGS
    try:
        if args.json:
            json.dump(report.to_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(report.summary())
        sys.stdout.flush()
    except BrokenPipeError:  # `verify ... | head`: the reader left; the verdict stands
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


def _check_exists(destination: Any) -> None:
    from auditlock.sinks.base import DestinationError

    root = getattr(destination, "root", None)
    if isinstance(root, Path) and not root.is_dir():
        raise DestinationError(f"{destination.url}: no such directory {root}")


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
