"""What the operator learns from and writes to a policy's destination.

All functions block (the official storage clients do); the reconciler runs them in a
thread with a timeout. Credentials are read from the Secret the policy names and passed
as options, never logged.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from auditlock import sinks
from auditlock.ledger.newest import StreamTip, newest_checkpoints
from auditlock.policy.model import AuditPolicySpec
from auditlock.sinks.retry import RetryPolicy

KEY_PREFIX = "keys/"
CHECK_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0, deadline=5.0)


@dataclass
class DestinationState:
    """The outcome of one look at the destination, in the words status will use."""

    url: str
    reachable: bool
    ok: bool
    worm: bool
    reason: str
    message: str
    last_checkpoint: str | None = None
    tips: dict[str, StreamTip] | None = None  # each stream's newest checkpoint, when listed
    facts: dict[str, Any] = field(default_factory=dict)


def retention_spec(spec: AuditPolicySpec) -> sinks.RetentionSpec:
    mode = sinks.LockMode.LOCKED if spec.retention.mode == "Locked" else sinks.LockMode.UNLOCKED
    return sinks.RetentionSpec(
        period=timedelta(days=spec.retention.days),
        mode=mode,
        legal_hold=spec.retention.legal_hold,
    )


def open_options(spec: AuditPolicySpec, secret_data: dict[str, str] | None) -> dict[str, Any]:
    """Options for `sinks.open` from the spec and the credentials Secret's data."""
    options: dict[str, Any] = {}
    if spec.destination.file is None:
        # The operator only looks: fail fast and let its own backoff retry, instead of
        # riding out a minute-long outage inside one reconcile like the sidecar does.
        options["retry"] = CHECK_RETRY
    options.update(location_options(spec))
    decoded = {k: base64.b64decode(v).decode() for k, v in (secret_data or {}).items()}
    if spec.destination.s3 is not None and "AWS_ACCESS_KEY_ID" in decoded:
        options["access_key_id"] = decoded["AWS_ACCESS_KEY_ID"]
        options["secret_access_key"] = decoded.get("AWS_SECRET_ACCESS_KEY", "")
    elif spec.destination.gcs is not None and "key.json" in decoded:
        options["credentials_info"] = json.loads(decoded["key.json"])
    return options


def location_options(spec: AuditPolicySpec) -> dict[str, Any]:
    """How to reach the destination, without credentials: the same for the operator's
    check and the collector's config file (which gets its credentials from env/files)."""
    options: dict[str, Any] = {}
    s3, gcs = spec.destination.s3, spec.destination.gcs
    if s3 is not None:
        if s3.endpoint:
            options["endpoint_url"] = s3.endpoint
        if s3.region:
            options["region"] = s3.region
        if s3.addressing_style != "auto":
            options["addressing_style"] = s3.addressing_style
    elif gcs is not None and gcs.endpoint:
        options["endpoint"] = gcs.endpoint
    return options


def inspect(
    spec: AuditPolicySpec,
    options: dict[str, Any],
    public_key: tuple[str, bytes] | None,
    max_age: float = 0.0,
    mine: Callable[[str], bool] = lambda stream: True,
) -> DestinationState:
    """Check the destination's lock configuration, publish the public key, find the
    newest checkpoint of the streams `mine` accepts. Never raises: every failure becomes
    a reason and one sentence."""
    url = spec.destination.url
    try:
        destination = sinks.open(url, **options)
    except sinks.DestinationError as exc:
        return DestinationState(url, False, False, False, "DestinationInvalid", str(exc))
    try:
        try:
            report = destination.check(retention_spec(spec))
        except sinks.DestinationError as exc:
            return DestinationState(url, False, False, False, "DestinationUnreachable", str(exc))
        except OSError as exc:
            return DestinationState(
                url, False, False, False, "DestinationUnreachable", f"cannot reach {url}: {exc}"
            )
        state = _judge(url, report)
        if report.ok and public_key is not None:
            _publish_key(destination, spec, public_key, state)
        if report.ok:
            state.tips = _cached_tips(url, destination, max_age)
            state.last_checkpoint = _newest_time(state.tips, mine)
        return state
    finally:
        destination.close()


def _judge(url: str, report: sinks.CheckReport) -> DestinationState:
    facts = dict(report.facts)
    if not report.ok:
        first = report.problems[0] if report.problems else f"{url} failed its check."
        if facts.get("exists") is not True:
            # Not reached or not usable at all: worth retrying (it may be created or come
            # back); the first problem is the one sentence status shows.
            if "does not exist" in first:
                reason = "BucketNotFound"
            elif "denied" in first.lower():
                reason = "AccessDenied"
            else:
                reason = "DestinationUnreachable"
            return DestinationState(url, False, False, False, reason, first, facts=facts)
        locked = facts.get("object_lock_enabled", facts.get("lock_enabled"))
        reason = "RetentionLockMissing" if report.worm is False else "DestinationCheckFailed"
        if locked is True:
            reason = "DestinationCheckFailed"
        message = " ".join(report.problems)
        return DestinationState(url, True, False, False, reason, message, facts=facts)
    if not report.worm:
        notices = " ".join(getattr(report, "notices", []) or [])
        message = notices or f"{url} is not WORM storage: objects can be changed or deleted."
        return DestinationState(url, True, True, False, "NotWorm", message, facts=facts)
    return DestinationState(
        url, True, True, True, "RetentionLocked", f"{url} enforces the retention lock.", facts=facts
    )


def _publish_key(
    destination: sinks.Destination,
    spec: AuditPolicySpec,
    public_key: tuple[str, bytes],
    state: DestinationState,
) -> None:
    """Store keys/<key-id>.pub beside the data (FORMAT.md), under the retention lock."""
    key_id, pem = public_key
    try:
        destination.put(f"{KEY_PREFIX}{key_id}.pub", pem, retention_spec(spec))
    except sinks.ObjectConflict:
        state.facts["public_key"] = "a different object already holds this key id"
    except sinks.DestinationError as exc:
        state.facts["public_key"] = f"not published: {exc}"
    else:
        state.facts["public_key"] = f"{KEY_PREFIX}{key_id}.pub"


# Finding the newest checkpoints lists the destination's streams/ (segments included), so
# the periodic refresh reuses a recent answer instead of listing a big bucket every minute.
_SCANS: dict[str, tuple[float, dict[str, StreamTip] | None]] = {}
SCAN_INTERVAL = 300.0
MAX_LISTED = 500_000  # a bound on one scan; beyond it the answer may miss newer streams
READS_IN_FLIGHT = 8  # newest checkpoints read at once from a remote store


def read_newest(url: str, destination: sinks.Destination) -> dict[str, StreamTip]:
    """Every stream's newest checkpoint in `destination` (`ledger.newest`), remembered as
    the latest reading of `url`: the witness, the trail watcher and the periodic refresh
    (LAST-CHECKPOINT, abandonment) share one reading instead of listing the bucket each.
    DestinationError and OSError propagate."""
    workers = 0 if url.startswith("file:") else READS_IN_FLIGHT
    found = newest_checkpoints(destination, limit=MAX_LISTED, workers=workers)
    _SCANS[url] = (time.monotonic(), found)
    return found


def _cached_tips(
    url: str, destination: sinks.Destination, max_age: float
) -> dict[str, StreamTip] | None:
    if url in _SCANS and (recent := _SCANS[url])[0] > time.monotonic() - max_age:
        return recent[1]
    try:
        return read_newest(url, destination)
    except (sinks.DestinationError, OSError):
        _SCANS[url] = (time.monotonic(), None)
        return None


def _newest_time(tips: dict[str, StreamTip] | None, mine: Callable[[str], bool]) -> str | None:
    """Time of the newest checkpoint of the streams `mine` accepts (stored time form sorts
    as time)."""
    times = [
        t.signed.checkpoint.time
        for s, t in (tips or {}).items()
        if t.signed is not None and mine(s)
    ]
    return max(times, default=None)
