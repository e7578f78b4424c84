"""`auditlock verify-policies`: continuous verification, the chart's optional CronJob.

Verifies every AuditPolicy's destination with the policy's public key and writes the
verdict into the policy's status (docs/operator.md, "Continuous verification"). Exit 0
when every trail verified, 1 when any has findings or could not be verified, 2 on usage
or Kubernetes errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from auditlock.cli.main import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify-policies",
        help="verify each AuditPolicy's destination and write the verdict into its status",
        description="Verify each AuditPolicy's destination with the policy's public key "
        "(status.publicKey) and write the verdict into the policy's status: verification, "
        "lastVerified and the TrailVerified condition (the first finding as its message). "
        "Destination credentials come from the environment (AWS_*, "
        "GOOGLE_APPLICATION_CREDENTIALS). Exit 0: every trail verified; 1: findings or no "
        "verdict for some policy; 2: usage or Kubernetes error.",
    )
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="kubeconfig file; default: the in-cluster ServiceAccount",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="only policies in this namespace (repeatable); default: every namespace",
    )
    parser.add_argument(
        "--slack",
        type=float,
        default=None,
        metavar="SECONDS",
        help="tolerance on top of the heartbeat interval before a time gap is a problem "
        "(verify's --slack)",
    )
    parser.add_argument(
        "--witness-key",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="the operator's public key (repeatable): also check each destination against "
        "the operator's witness records (verify's --witness-key)",
    )
    parser.add_argument("--json", action="store_true", help="print each verdict as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException

    from auditlock.ledger.errors import KeyFileError
    from auditlock.ledger.keys import load_public_key
    from auditlock.operator.kube import Kube, load_api_client
    from auditlock.operator.trail_verification import PASS, verify_policies

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        witness_keys = [load_public_key(path) for path in args.witness_key]
    except KeyFileError as exc:
        print(f"auditlock verify-policies: --witness-key: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        kube = Kube(load_api_client(args.kubeconfig))
        verdicts = verify_policies(
            kube,
            namespaces=set(args.namespace) or None,
            slack_seconds=args.slack,
            witness_keys=witness_keys,
        )
    except (ConfigException, OSError) as exc:
        print(f"auditlock verify-policies: cannot reach Kubernetes: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiException as exc:
        print(f"auditlock verify-policies: the API server refused: {exc.status} {exc.reason}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    for verdict in verdicts:
        record = verdict.record
        if args.json:
            print(json.dumps({"namespace": verdict.namespace, "policy": verdict.name,
                              "statusWritten": verdict.written, **record}))  # fmt: skip
        else:
            print(f"{record['result']}: {verdict.namespace}/{verdict.name}: "
                  f"{record['reason']}: {record['message']}")  # fmt: skip
    if not verdicts:
        print("auditlock verify-policies: no AuditPolicies found", file=sys.stderr)
    return EXIT_OK if all(v.result == PASS for v in verdicts) else EXIT_FINDINGS
