"""`auditlock verify URL`: verify a ledger offline.

Exit 0 verified, 1 problems found, 2 usage or I/O error, 3 the verifier failed (no
verdict). With --json a JSON document is printed in every case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from auditlock.cli.main import (
    EXIT_CRASH,
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    add_pem_files_option,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="verify a ledger offline (signatures, chains, Merkle roots, gaps, retention)",
        description="Verify every stream under URL (file://DIR, s3://bucket/prefix, "
        "gs://bucket/prefix). Exit 0: everything verified; 1: problems found (each named); "
        "2: usage or I/O error; 3: the verifier itself failed (a bug: no verdict either "
        "way). With --json a JSON document is printed in every case (result PASS, FAIL "
        "or ERROR).",
    )
    parser.add_argument("url", metavar="URL")
    add_pem_files_option(
        parser,
        "--public-key",
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
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="verify up to N streams at once, each in its own process (default 1; the "
        "report is the same for every N)",
    )
    add_pem_files_option(
        parser,
        "--witness-key",
        "--witness",
        help="the operator's public key (repeatable): also check the operator's witness "
        "records and compare every checkpoint they name with the store (FORMAT.md "
        "section 16: a deleted or rolled-back stream, a split view)",
    )
    add_pem_files_option(
        parser,
        "--tsa-cert",
        help="with --witness-key: certificates of the time-stamping authority (roots and "
        "intermediates, repeatable); each witness record's RFC 3161 token is checked",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return _error(
            args,
            EXIT_CRASH,
            f"the verifier failed ({type(exc).__name__}: {exc}); no verdict. Please report "
            "this with the traceback above.",
        )


def _run(args: argparse.Namespace) -> int:
    from auditlock import sinks
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import load_public_key
    from auditlock.ledger.verify import VerifyOptions, parse_time_option, verify

    if args.jobs < 1:
        return _error(args, EXIT_USAGE, f"--jobs must be at least 1, not {args.jobs}")
    for flag, value in (("--slack", args.slack), ("--require-retention", args.require_retention)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            return _error(args, EXIT_USAGE, f"{flag} must be a finite number >= 0, not {value}")
    if args.tsa_cert and not args.witness_key:
        return _error(args, EXIT_USAGE, "--tsa-cert needs --witness-key")
    try:
        keys = [load_public_key(path) for path in args.public_key]
        witness_keys = [load_public_key(path) for path in args.witness_key]
        tsa_certificates = _certificates(args.tsa_cert)
        options = VerifyOptions(
            public_keys=keys,
            since_ns=parse_time_option(args.since) if args.since else None,
            until_ns=parse_time_option(args.until) if args.until else None,
            slack_seconds=args.slack,
            require_retention_days=args.require_retention,
            jobs=args.jobs,
            witness_keys=witness_keys,
            tsa_certificates=tsa_certificates,
        )
    except (KeyFileError, CertificateFileError) as exc:
        return _error(args, EXIT_USAGE, str(exc))
    except ValueError as exc:
        return _error(args, EXIT_USAGE, f"--since/--until: {exc}")
    try:
        destination = sinks.open(args.url)
        _check_exists(destination)
        report = verify(destination, options)
    except sinks.DestinationError as exc:
        return _error(args, EXIT_USAGE, str(exc))
    code = EXIT_OK if report.ok else EXIT_FINDINGS
    if args.json:
        _print(json.dumps(report.to_json(), indent=2))
    else:
        _print(report.summary())
    return code


class CertificateFileError(Exception):
    pass


def _certificates(paths: list[Path]) -> list[Any]:
    from auditlock.ledger.trusted_time import load_certificates

    found = []
    for path in paths:
        try:
            found.extend(load_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise CertificateFileError(f"--tsa-cert {path}: {exc}") from None
    return found


def _error(args: argparse.Namespace, code: int, message: str) -> int:
    from auditlock.ledger.escape import escape

    print(f"error: {escape(message)}", file=sys.stderr)
    if getattr(args, "json", False):
        _print(json.dumps({"url": getattr(args, "url", None), "result": "ERROR",
                           "exit_code": code, "error": message}, indent=2))  # fmt: skip
    return code


def _print(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `verify ... | head`: the reader left; the verdict stands
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _check_exists(destination: Any) -> None:
    from auditlock.sinks.base import DestinationError

    root = getattr(destination, "root", None)
    if isinstance(root, Path) and not root.is_dir():
        raise DestinationError(f"{destination.url}: no such directory {root}")
