"""`auditlock synth`: write a valid, signed synthetic ledger (for trying verify, benchmarks)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from auditlock.cli.main import EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic signed ledger",
        description="Write N streams of M synthetic events each, signed with KEY, to URL. "
        "Deterministic for a seed: event times come from a simulated clock starting at "
        "--start, one event every --interval-ms.",
    )
    parser.add_argument("--store", required=True, metavar="URL")
    parser.add_argument("--key", required=True, type=Path, metavar="signing.key")
    parser.add_argument("--streams", type=int, default=1, metavar="N")
    parser.add_argument("--events", type=int, required=True, metavar="M", help="per stream")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--segment-events", type=int, default=1000, metavar="K")
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--start", default="2026-01-01T00:00:00Z", metavar="RFC3339")
    parser.add_argument("--compress", action="store_true", help="gzip segments (.jsonl.gz)")
    parser.add_argument("--retention-days", type=float, default=None, metavar="DAYS")
    parser.add_argument("--no-fsync", action="store_true", help="file:// only: skip fsync")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from auditlock import sinks
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import Signer, load_private_key
    from auditlock.ledger.synth import synthesize
    from auditlock.ledger.verify import parse_time_option

    if args.streams < 1 or args.events < 0 or args.segment_events < 1:
        print("error: --streams and --segment-events must be >= 1, --events >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        signer = Signer(load_private_key(args.key))
        start_ns = parse_time_option(args.start)
        options = {"fsync": False} if args.no_fsync and args.store.startswith("file:") else {}
        destination = sinks.open(args.store, **options)
        retention = (
            sinks.RetentionSpec(period=timedelta(days=args.retention_days))
            if args.retention_days
            else None
        )
        began = time.perf_counter()
        stats = synthesize(
            destination, signer, streams=args.streams, events=args.events, seed=args.seed,
            segment_events=args.segment_events, start_ns=start_ns,
            interval_ns=int(args.interval_ms * 1e6), retention=retention, compress=args.compress,
        )  # fmt: skip
    except (KeyFileError, ValueError, sinks.DestinationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    elapsed = time.perf_counter() - began
    print(
        f"wrote {stats.streams} streams, {stats.events} events, {stats.objects} objects "
        f"({stats.bytes / 1e6:.1f} MB) to {args.store} in {elapsed:.1f} s"
    )
    return EXIT_OK
