"""`auditlock prove URL EVENT-ID` and `auditlock verify-proof PROOF`: one event, offline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from auditlock.cli.main import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    prove = subparsers.add_parser(
        "prove",
        help="print an inclusion proof (JSON) for one event",
        description="Find the event with id EVENT-ID and print a proof that it is covered "
        "by the newest signed checkpoint of its stream epoch (RFC 9162 inclusion proof).",
    )
    prove.add_argument("url", metavar="URL")
    prove.add_argument("event_id", metavar="EVENT-ID")
    prove.add_argument("--stream", help="only look in this stream")
    prove.add_argument("--out", type=Path, help="write the proof here instead of stdout")
    prove.set_defaults(func=run_prove)
    check = subparsers.add_parser(
        "verify-proof",
        help="check an inclusion proof offline against its signed checkpoint",
        description="Exit 0 if the proof verifies under the public key, 1 if it does not, "
        "2 on usage errors.",
    )
    check.add_argument("proof", metavar="PROOF", help="proof file, or - for stdin")
    check.add_argument("--public-key", type=Path, metavar="PEM")
    check.set_defaults(func=run_verify_proof)


def run_prove(args: argparse.Namespace) -> int:
    from auditlock import sinks
    from auditlock.ledger.errors import FormatError, ProofError
    from auditlock.ledger.proof import build_proof

    try:
        destination = sinks.open(args.url)
        proof = build_proof(destination, args.event_id, stream=args.stream)
    except sinks.DestinationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ProofError, FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    text = json.dumps(proof, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def run_verify_proof(args: argparse.Namespace) -> int:
    import orjson

    from auditlock.ledger.errors import KeyFileError, ProofError
    from auditlock.ledger.keys import load_public_key
    from auditlock.ledger.proof import check_proof

    try:
        text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text()
        proof = orjson.loads(text)  # bounded depth: a proof file may be hostile
        key = load_public_key(args.public_key) if args.public_key else None
    except (OSError, ValueError, KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        event = check_proof(proof, key)
    except ProofError as exc:
        print(f"FAIL: {exc}")
        return EXIT_FINDINGS
    note = "" if key else " (no --public-key: checked only against the key inside the proof)"
    print(
        f"PASS: event {event.get('id')!r} is seq {proof['seq']} of stream {proof['stream']} "
        f"epoch {proof['epoch']}, covered by signed checkpoint {proof['checkpoint']['name']}" + note
    )
    return EXIT_OK
