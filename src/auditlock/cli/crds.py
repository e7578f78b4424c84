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
    from auditlock.alerts.crd import RULE_CRD
    from auditlock.policy.crd import CRD as POLICY_CRD

    crds = (POLICY_CRD, RULE_CRD)
    if args.stdout:
        sys.stdout.write("---\n".join(crd.render() for crd in crds))
        return EXIT_OK
    if args.check:
        drifted = [args.output / crd.filename for crd in crds if crd.drifted(args.output)]
        for path in drifted:
            print(f"{path}: out of date; run `auditlock crds -o {args.output}`", file=sys.stderr)
        return EXIT_FINDINGS if drifted else EXIT_OK
    for crd in crds:
        print(f"wrote {crd.write(args.output)}")
    return EXIT_OK
