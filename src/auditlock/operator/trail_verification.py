"""Continuous verification: each policy's destination verified with the policy's public
key, the verdict written into the policy's status (docs/operator.md, "Continuous
verification").

`auditlock verify-policies` (the chart's optional CronJob) runs `verify_policies`. Each
distinct destination is verified once, through the same `auditlock.ledger.verify` an
auditor runs, trusting the public keys (`status.publicKey`) of the policies that write
there. The run writes `status.verification` (the verdict, the first finding), `lastVerified`
and the TrailVerified condition derived from it (conditions.py). The condition is written
with the policy's resourceVersion as a precondition (a conflict is read again and
retried), so no other status write is lost; the operator derives the same condition from
`status.verification` whenever it writes status (so a write of its own from an older copy
is corrected by its next refresh), and exports the verdict as metrics.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from auditlock import sinks
from auditlock.ledger.errors import KeyFileError
from auditlock.ledger.keys import load_public_key
from auditlock.ledger.report import VerifyReport
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.operator import conditions as c
from auditlock.operator.destination import location_options
from auditlock.operator.kube import Kube
from auditlock.policy import parse_spec

log = logging.getLogger("auditlock.operator.trail_verification")

PASS, FAIL, ERROR = "PASS", "FAIL", "ERROR"
TRAIL_INTACT = "TrailIntact"
DESTINATION_UNREACHABLE = "DestinationUnreachable"
NO_PUBLIC_KEY = "NoPublicKey"
INVALID_SPEC = "InvalidSpec"
VERIFIER_FAILED = "VerifierFailed"
MAX_MESSAGE = 1024
STATUS_ATTEMPTS = 5


@dataclass
class PolicyVerdict:
    namespace: str
    name: str
    record: dict[str, Any]  # status.verification
    written: bool = False

    @property
    def result(self) -> str:
        return str(self.record["result"])


@dataclass
class _Destination:
    url: str
    options: dict[str, Any]
    keys: list[bytes] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reason_for(code: str) -> str:
    """A finding code (`checkpoint-missing`) as a condition reason (`CheckpointMissing`)."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", code) if w]
    reason = "".join(w[:1].upper() + w[1:] for w in words)
    return reason if reason[:1].isalpha() else f"Finding{reason}"


def record_for(report: VerifyReport, time: str) -> dict[str, Any]:
    """status.verification for a verdict: the first finding is the message."""
    counts = {
        "findings": len(report.findings),
        "warnings": len(report.warnings),
        "eventsVerified": report.events_verified,
        "checkpointsVerified": report.checkpoints_verified,
        "streams": len(report.streams),
    }
    if report.ok:
        message = (
            f"{report.events_verified} events and {report.checkpoints_verified} checkpoints "
            f"in {len(report.streams)} stream(s) verified with the policy's public key."
        )
        return {"result": PASS, "time": time, "reason": TRAIL_INTACT, "message": message,
                **counts}  # fmt: skip
    first = report.findings[0]
    more = len(report.findings) - 1
    message = first.describe() + (f" (and {more} more finding(s))" if more else "")
    return {"result": FAIL, "time": time, "reason": reason_for(first.code),
            "message": message[:MAX_MESSAGE], **counts}  # fmt: skip


def error_record(reason: str, message: str, time: str) -> dict[str, Any]:
    return {"result": ERROR, "time": time, "reason": reason, "message": message[:MAX_MESSAGE]}


def verify_policies(
    kube: Kube,
    *,
    namespaces: set[str] | None = None,
    slack_seconds: float | None = None,
    witness_keys: Sequence[Ed25519PublicKey] = (),
    clock: Callable[[], str] = now_rfc3339,
) -> list[PolicyVerdict]:
    """Verify every policy's destination (in `namespaces`, or all) and write each verdict
    into its policy's status; with `witness_keys` (the operator's), also against the
    operator's witness records (docs/FORMAT.md section 16). Blocking."""
    verdicts: list[PolicyVerdict] = []
    destinations: dict[tuple[str, str], _Destination] = {}
    for body in kube.list_policies():
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if namespaces and namespace not in namespaces:
            continue
        try:
            spec = parse_spec(body.get("spec") or {})
        except ValidationError as exc:
            record = error_record(INVALID_SPEC, f"the spec is invalid: {exc.errors()[0]['msg']}",
                                  clock())  # fmt: skip
            verdicts.append(PolicyVerdict(namespace, name, record))
            continue
        pem = (body.get("status") or {}).get("publicKey")
        if not isinstance(pem, str) or not pem:
            message = "the policy has no public key in its status yet (not reconciled)"
            verdicts.append(PolicyVerdict(namespace, name, error_record(NO_PUBLIC_KEY, message,
                                                                        clock())))  # fmt: skip
            continue
        options = location_options(spec)
        place = (spec.destination.url, repr(sorted(options.items())))
        target = destinations.setdefault(place, _Destination(spec.destination.url, options))
        if pem.encode() not in target.keys:
            target.keys.append(pem.encode())
        target.policies.append(body)
    for target in destinations.values():
        record = _verify(target, slack_seconds, witness_keys, clock)
        for body in target.policies:
            meta = body["metadata"]
            verdicts.append(PolicyVerdict(str(meta["namespace"]), str(meta["name"]), record))
    for verdict in verdicts:
        verdict.written = write_status(kube, verdict.namespace, verdict.name, verdict.record)
    return verdicts


def _verify(
    target: _Destination,
    slack_seconds: float | None,
    witness_keys: Sequence[Ed25519PublicKey],
    clock: Callable[[], str],
) -> dict[str, Any]:
    try:
        keys = [load_public_key(pem) for pem in target.keys]
    except KeyFileError as exc:
        return error_record(NO_PUBLIC_KEY, f"status.publicKey is not a usable key: {exc}", clock())
    options = VerifyOptions(public_keys=keys, witness_keys=list(witness_keys))
    if slack_seconds is not None:
        options.slack_seconds = slack_seconds
    try:
        destination = sinks.open(target.url, **target.options)
        report = verify(destination, options)
    except sinks.DestinationError as exc:
        return error_record(DESTINATION_UNREACHABLE, f"{target.url}: {exc}", clock())
    except Exception as exc:  # no verdict either way; the job reports it and goes on
        log.exception("verifying %s failed", target.url)
        return error_record(VERIFIER_FAILED, f"the verifier failed on {target.url}: "
                            f"{type(exc).__name__}: {exc}", clock())  # fmt: skip
    return record_for(report, clock())


def write_status(kube: Kube, namespace: str, name: str, record: dict[str, Any]) -> bool:
    """status.verification, lastVerified (on a verdict) and TrailVerified, written with
    the policy's resourceVersion as a precondition; False when the policy is gone."""
    for _ in range(STATUS_ATTEMPTS):
        body = kube.get_policy(namespace, name)
        if body is None:
            return False
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        generation = meta.get("generation")
        fresh = {**status, "verification": record}
        conditions = c.with_trail_verified(fresh, list(status.get("conditions") or []),
                                           generation)  # fmt: skip
        patch: dict[str, Any] = {
            "verification": record,
            "conditions": c.merge(status.get("conditions"), conditions),
        }
        if record["result"] != ERROR:
            patch["lastVerified"] = record["time"]
        try:
            kube.patch_policy_status_at(namespace, name, patch, str(meta.get("resourceVersion")))
        except ApiException as exc:
            if exc.status == 409:
                continue  # someone else wrote the policy meanwhile: read it again
            if exc.status == 404:
                return False
            raise
        return True
    raise RuntimeError(f"status of {namespace}/{name} kept changing; not written")
