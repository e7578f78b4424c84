"""The `auditlock` command: one subcommand per module in this package.

Each subcommand module defines `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed args and returning an exit code. Modules are
imported lazily-by-list so a missing optional dependency (say, boto3) only breaks the
subcommand that needs it, never `auditlock --help`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

# Add a module here when you add a subcommand (auditlock.cli.<name>).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "crds",
    "operator",
    "sidecar",
    "keys",
    "synth",
    "verify",
    "verify_policies",
    "prove",
    "count",
    "query",
    "trace",
    "export",
    "report",
    "evidence",
)

# Exit codes shared by every subcommand (verify's contract: 0 ok, 1 findings, 2 usage/I-O,
# 3 the verifier itself failed: no verdict, never to be read as "findings").
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_CRASH = 3


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `command`, only the subcommand module of that name (when there
    is one), so running one command does not import every other's dependencies (the
    operator's YAML and asyncio cost a query from the review cache a tenth of its time)."""
    parser = argparse.ArgumentParser(
        prog="auditlock",
        description="Tamper-evident audit trails for Kubernetes, stored under WORM locks.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    module_name = (command or "").replace("-", "_")
    names = (module_name,) if module_name in SUBCOMMAND_MODULES else SUBCOMMAND_MODULES
    for name in names:
        module = importlib.import_module(f"auditlock.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list[0] if args_list else None)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = func(args)
    return code


def add_pem_files_option(parser: argparse.ArgumentParser, *flags: str, help: str) -> None:
    """A repeatable option naming PEM files (keys, certificates): a list, empty if unset."""
    parser.add_argument(*flags, action="append", default=[], type=Path, metavar="PEM", help=help)


def _version() -> str:
    from auditlock import __version__

    return f"auditlock {__version__}"


if __name__ == "__main__":
    sys.exit(main())
