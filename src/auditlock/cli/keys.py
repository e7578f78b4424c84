"""`auditlock keys`: generate a signing key pair, print a key id, rotate to a new key."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from auditlock.cli.main import EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="generate, identify and rotate Ed25519 signing keys",
        description="Ed25519 signing keys for ledger checkpoints (docs/FORMAT.md, Keys).",
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    gen = sub.add_parser(
        "generate",
        help="write DIR/signing.key (PEM PKCS#8) and DIR/signing.pub (PEM SubjectPublicKeyInfo)",
    )
    gen.add_argument("--out", required=True, type=Path, metavar="DIR")
    gen.add_argument("--force", action="store_true", help="replace existing key files")
    gen.set_defaults(func=_generate)
    ident = sub.add_parser("id", help="print the key id (SHA-256 of the raw public key)")
    ident.add_argument("pem", type=Path, metavar="PEM", help="public or private key file")
    ident.set_defaults(func=_id)
    rotate = sub.add_parser(
        "rotate",
        help="store a rotation record, signed by the old key, that hands streams to a new key",
    )
    rotate.add_argument("--store", required=True, metavar="URL")
    rotate.add_argument("--old", required=True, type=Path, metavar="OLD.key")
    rotate.add_argument("--new", required=True, type=Path, metavar="NEW.key|NEW.pub")
    rotate.set_defaults(func=_rotate)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), EXIT_USAGE)[1])


def _generate(args: argparse.Namespace) -> int:
    from auditlock.ledger.keys import generate, key_id, private_pem, public_pem

    out: Path = args.out
    key_path, pub_path = out / "signing.key", out / "signing.pub"
    if not args.force and (key_path.exists() or pub_path.exists()):
        print(f"error: {key_path} or {pub_path} exists; pass --force to replace", file=sys.stderr)
        return EXIT_USAGE
    try:
        out.mkdir(parents=True, exist_ok=True)
        private = generate()
        for path in (key_path, pub_path):
            path.unlink(missing_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem(private))
        pub_path.write_bytes(public_pem(private.public_key()))
    except OSError as exc:
        print(f"error: cannot write keys to {out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {key_path} and {pub_path}; key id {key_id(private.public_key())}")
    return EXIT_OK


def _load_any_public(path: Path) -> Any:
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import load_private_key, load_public_key

    try:
        return load_public_key(path)
    except KeyFileError:
        return load_private_key(path).public_key()


def _id(args: argparse.Namespace) -> int:
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import key_id

    try:
        print(key_id(_load_any_public(args.pem)))
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    from auditlock import sinks
    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import Signer, load_private_key
    from auditlock.ledger.rotation import publish_rotation

    try:
        old = Signer(load_private_key(args.old))
        new_public = _load_any_public(args.new)
        destination = sinks.open(args.store)
        names = publish_rotation(
            destination, old, new_public, retention=None, time_ns=time.time_ns()
        )
    except (KeyFileError, sinks.DestinationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for name in names:
        print(f"stored {name}")
    return EXIT_OK
