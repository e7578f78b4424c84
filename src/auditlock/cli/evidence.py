"""`auditlock evidence URL --out evidence.tar.gz` and `auditlock verify-evidence FILE`.

`evidence` reads the trail through verification (or the review cache), like `report`.
`verify-evidence` needs nothing but the package and a public key. Exit codes: 0 PASS,
1 findings (each with a code), 2 usage or I/O error, 3 the command failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from auditlock.cli.main import EXIT_CRASH, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    from auditlock.cli.report import add_period_options
    from auditlock.cli.review_common import add_trail_options, run_guarded

    build = subparsers.add_parser(
        "evidence",
        help="bundle a period's report, verification, keys, checkpoints and a sample with proofs",
        description="Write a .tar.gz an auditor checks offline with `auditlock "
        "verify-evidence`: the report, the verify JSON, the public keys and rotations, the "
        "checkpoints covering the period, a reproducible random sample of N events (same "
        'seed, same sample: docs/review.md, "Sampling"), each with its inclusion proof, and '
        "a manifest of SHA-256 digests. Exit 0: the trail verified; 1: findings (the "
        "package is written and records them); 2: usage or I/O error; 3: the command failed.",
    )
    build.add_argument("url", metavar="URL")
    add_period_options(build)
    build.add_argument("--sample", type=int, required=True, metavar="N", help="events to sample")
    build.add_argument("--seed", required=True, metavar="S", help="the sample's seed (any text)")
    build.add_argument("--out", type=Path, required=True, metavar="FILE", help="evidence.tar.gz")
    build.add_argument("--title", default=None, help="the report's title")
    add_trail_options(build)
    build.set_defaults(func=lambda args: run_guarded(args, _build))

    check = subparsers.add_parser(
        "verify-evidence",
        help="check an evidence package offline against a public key",
        description="Check every member against the manifest, the checkpoints' signatures "
        "and chain, the sample's keys and each inclusion proof, with nothing but the "
        "package and --public-key. Exit 0: PASS; 1: findings, each with a code; 2: usage "
        "or I/O error; 3: the checker failed.",
    )
    check.add_argument("package", type=Path, metavar="FILE")
    check.add_argument(
        "--public-key", action="append", required=True, type=Path, metavar="PEM",
        help="trusted public key (repeatable); keys rotated to from it are trusted too",
    )  # fmt: skip
    check.add_argument(
        "--manifest-sha256", metavar="HEX",
        help="also require this SHA-256 of manifest.json (as printed by `auditlock evidence`)",
    )  # fmt: skip
    check.add_argument(
        "--max-bytes", type=int, default=512 << 20, metavar="N",
        help="refuse a package that inflates to more than N bytes (default 512 MiB)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="print the JSON report")
    check.set_defaults(func=_verify)


def _build(args: argparse.Namespace) -> int:
    from auditlock.cli.report import period
    from auditlock.cli.review_common import (
        UsageError,
        exit_code,
        load_trails,
        print_summaries,
        trusted_keys,
        write_stdout,
    )
    from auditlock.evidence.errors import EvidenceError
    from auditlock.evidence.pack import build_evidence
    from auditlock.report import render_report
    from auditlock.report.build import DEFAULT_TITLE

    if args.sample < 0:
        raise UsageError("--sample must be >= 0")
    since, until = period(args)
    keys = trusted_keys(args)
    (trail,) = load_trails(args, [args.url])
    try:
        html = render_report(
            [trail], since_ns=since, until_ns=until, anchors=keys,
            title=args.title or DEFAULT_TITLE, memory_limit=args.memory_limit,
        )  # fmt: skip
        try:
            summary = build_evidence(
                trail, since_ns=since, until_ns=until, sample_size=args.sample, seed=args.seed,
                report_html=html, out=args.out, anchors=keys, memory_limit=args.memory_limit,
            )  # fmt: skip
        except EvidenceError as exc:
            raise UsageError(f"cannot build the package [{exc.code}]: {exc.message}") from None
        except OSError as exc:
            raise UsageError(f"cannot write {args.out}: {exc}") from None
    finally:
        trail.close()
    code: int = exit_code([trail])
    facts = {
        "result": "PASS" if code == EXIT_OK else "FAIL",
        "out": str(summary.out),
        "bytes": summary.bytes,
        "manifest_sha256": summary.manifest_sha256,
        "members": summary.members,
        "checkpoints": summary.checkpoints,
        "population": summary.population,
        "sampled": summary.sampled,
        "trail": trail.summary_json(),
    }
    if args.json:
        write_stdout(json.dumps(facts, indent=2))
    else:
        print_summaries([trail])
        write_stdout(
            f"evidence: {summary.out} ({summary.bytes:,} bytes, {summary.members} members): "
            f"{summary.sampled} of {summary.population:,} events sampled with proofs, "
            f"{summary.checkpoints} checkpoints\n"
            f"manifest.json sha256: {summary.manifest_sha256} (record it; "
            "verify-evidence --manifest-sha256 checks it)"
        )
    return code


def _verify(args: argparse.Namespace) -> int:
    try:
        return _verify_unguarded(args)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        print(f"error: verify-evidence failed ({type(exc).__name__}: {exc}); no verdict",
              file=sys.stderr)  # fmt: skip
        return EXIT_CRASH


def _verify_unguarded(args: argparse.Namespace) -> int:
    from auditlock.evidence.archive import Limits
    from auditlock.evidence.check import Finding, check_evidence, describe
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.escape import escape
    from auditlock.ledger.keys import load_public_key

    try:
        keys = [load_public_key(path) for path in args.public_key]
    except KeyFileError as exc:
        print(f"error: {escape(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if not args.package.is_file():
        print(f"error: {escape(str(args.package))}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if args.max_bytes <= 0:
        print("error: --max-bytes must be > 0", file=sys.stderr)
        return EXIT_USAGE
    report = check_evidence(args.package, keys, Limits(total_bytes=args.max_bytes))
    pinned = (args.manifest_sha256 or "").strip().lower()
    if pinned and report.manifest_sha256 is not None and pinned != report.manifest_sha256:
        report.findings.append(Finding("manifest-not-pinned", f"manifest.json has SHA-256 "
                               f"{report.manifest_sha256}, not the --manifest-sha256 given",
                               "manifest.json"))  # fmt: skip
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(describe(report))
    return EXIT_OK if report.ok else EXIT_FINDINGS
