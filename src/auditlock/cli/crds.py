"""`auditlock crds`: write (or check) the CRD manifests generated from the policy model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from auditlock.cli.main import EXIT_FINDINGS, EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "crds",
        help="write the AuditPolicy and AuditAlertRule CRDs generated from the models",
        description="Write crds/*.yaml from auditlock.policy.model and "
        "auditlock.alerts.model, or check they are current.",
    )
    parser.add_argument(
        "--output", "-o", type=Path, default=Path("crds"), help="directory (default: crds)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only report drift; exit 1 when files differ"
    )
    parser.add_argument("--stdout", action="store_true", help="print the CRD instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from auditlock.alerts.crd import (
        CRD_FILENAME,
        render_rule_crd_yaml,
        rule_crd_drifted,
        write_rule_crd,
    )
    from auditlock.policy.crd import drifted_crds, render_crd_yaml, write_crds

    if args.stdout:
        sys.stdout.write(render_crd_yaml() + "---\n" + render_rule_crd_yaml())
        return EXIT_OK
    if args.check:
        drifted = drifted_crds(args.output)
        if rule_crd_drifted(args.output):
            drifted.append(args.output / CRD_FILENAME)
        for path in drifted:
            print(f"{path}: out of date; run `auditlock crds -o {args.output}`", file=sys.stderr)
        return EXIT_FINDINGS if drifted else EXIT_OK
    for path in [*write_crds(args.output), write_rule_crd(args.output)]:
        print(f"wrote {path}")
    return EXIT_OK
