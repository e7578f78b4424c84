"""Reading a GCS bucket's lock configuration back and judging it.

auditlock writes every object with per-object retention, so the bucket must have Object
Retention enabled and we must be allowed to create and read objects. A bucket retention
policy is not required; when there is one, it is reported, and an unlocked one or one
shorter than required is worth a notice (it does not weaken the per-object lock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import google.api_core.exceptions as gexc

from auditlock.sinks.base import CheckReport, DestinationError, LockMode, RetentionSpec

if TYPE_CHECKING:
    from auditlock.sinks.gcs import GCSDestination

NEEDED_PERMISSIONS = ["storage.objects.create", "storage.objects.get", "storage.objects.list"]


def check_bucket(dest: GCSDestination, required: RetentionSpec) -> CheckReport:
    name = dest.bucket_name
    required_days = required.period.total_seconds() / 86400
    facts: dict[str, Any] = {
        "bucket": name,
        "prefix": dest.prefix,
        "required_days": required_days,
        "required_mode": "Locked" if required.mode is LockMode.LOCKED else "Unlocked",
    }
    problems: list[str] = []
    notices: list[str] = []

    try:
        bucket = dest._call(
            f"read bucket gs://{name}",
            lambda: dest.client.get_bucket(name, timeout=dest.timeout, retry=None),
        )
    except DestinationError as exc:
        facts["exists"] = False if isinstance(exc.__cause__, gexc.NotFound) else None
        if facts["exists"] is False:
            problems.append(f"Bucket {name!r} does not exist.")
        else:
            problems.append(f"Bucket {name!r} could not be read: {exc}.")
        return CheckReport(dest.url, ok=False, worm=False, facts=facts, problems=problems)
    facts["exists"] = True

    # Writable: ask IAM rather than writing a probe, which would be retained for good.
    try:
        granted = dest._call(
            f"test permissions on gs://{name}",
            lambda: bucket.test_iam_permissions(NEEDED_PERMISSIONS, retry=None),
        )
        missing = sorted(set(NEEDED_PERMISSIONS) - set(granted or []))
        facts["writable"] = not missing
        if missing:
            problems.append(
                f"The identity lacks {', '.join(missing)} on bucket {name!r}, so it cannot "
                "write or read the trail."
            )
    except DestinationError as exc:
        facts["writable"] = None
        if isinstance(exc.__cause__, gexc.NotFound | gexc.MethodNotImplemented):
            why = "the server does not implement testIamPermissions (an emulator?)"
        else:
            why = str(exc)
        notices.append(f"Could not test permissions on {name!r}: {why}; not judged.")

    period_s = bucket.retention_period
    policy_locked = bool(bucket.retention_policy_locked)
    facts["retention_policy"] = (
        {"period_days": int(period_s) / 86400, "locked": policy_locked} if period_s else None
    )
    facts["object_retention_enabled"] = bucket.object_retention_mode == "Enabled"
    facts["versioning"] = bool(bucket.versioning_enabled)
    facts["default_event_based_hold"] = bool(bucket.default_event_based_hold)
    facts["cmek"] = bucket.default_kms_key_name

    if not facts["object_retention_enabled"]:
        problems.append(
            f"Object Retention is not enabled on bucket {name!r}, so auditlock cannot lock "
            "each object; create the bucket with --enable-per-object-retention."
        )
    if period_s:
        policy_days = int(period_s) / 86400
        if not policy_locked:
            notices.append(
                f"The bucket retention policy ({policy_days:g} days) is not locked, so an "
                "owner can shorten or remove it; per-object retention still holds."
            )
        if policy_days < required_days:
            notices.append(
                f"The bucket retention policy ({policy_days:g} days) is shorter than the "
                f"required {required_days:g} days; per-object retention covers the rest."
            )
    if facts["default_event_based_hold"]:
        notices.append(
            "Default event-based hold is on: new objects stay held until the hold is "
            "released, and the bucket retention period only starts then."
        )
    if facts["cmek"]:
        notices.append(
            f"Objects are encrypted with the customer-managed key {facts['cmek']}; keep that "
            "key version for at least the retention period or the trail becomes unreadable."
        )
    if required.mode is LockMode.UNLOCKED:
        notices.append(
            "The required mode is Unlocked: an identity with "
            "storage.objects.overrideUnlockedRetention can shorten or remove retention; use "
            "Locked for SOC 2 evidence."
        )
    worm = bool(facts["object_retention_enabled"]) or (
        policy_locked and bool(period_s) and int(period_s) / 86400 >= required_days
    )
    return CheckReport(
        dest.url, ok=not problems, worm=worm, facts=facts, problems=problems, notices=notices
    )
