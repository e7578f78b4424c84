"""`auditlock sidecar --config FILE`: run the collector sidecar (see docs/sidecar.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sidecar",
        help="run the collector sidecar (Forward/HTTP intake, spool, signed shipping)",
        description="Run the collector sidecar. Environment variables "
        "AUDITLOCK_SIDECAR__<SECTION>__<FIELD> override the file.",
    )
    _arguments(parser)
    parser.set_defaults(func=run)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sidecar config file (YAML or JSON)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config, print it (the Forward shared_key is not shown), and exit",
    )


def run(args: argparse.Namespace) -> int:
    from auditlock.sidecar.config import ConfigError, config_json, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"auditlock sidecar: {exc}", file=sys.stderr)
        return 2
    if args.check:
        shown = json.loads(config_json(config))
        forward = shown["sources"]["forward"]
        if forward.get("shared_key") is not None:  # a secret: say that it is set, only
            forward["shared_key"] = "(set, not shown)"
        print(json.dumps(shown, indent=2))
        return 0
    from auditlock.sidecar.handoff import exec_collector

    exec_collector(config)  # on Linux, does not return
    from auditlock.sidecar.app import main

    return main(config)


def run_from_argv(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m auditlock.sidecar")
    _arguments(parser)
    return run(parser.parse_args(argv))
