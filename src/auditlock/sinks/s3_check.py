"""Reading an S3 bucket's Object Lock configuration back and judging it.

A bucket is fit for an audit trail when it exists, we may use it, Object Lock is enabled
(which also means versioning is on and cannot be suspended) - then every object we write
carries its own retention. A default retention rule is not required, because auditlock
sets retention per object, but one that is weaker than required is worth a notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import botocore.exceptions

from auditlock.sinks.base import CheckReport, DestinationError, LockMode, RetentionSpec

if TYPE_CHECKING:
    from auditlock.sinks.s3 import S3Destination

_DAYS_PER_YEAR = 365


def check_bucket(dest: S3Destination, required: RetentionSpec) -> CheckReport:
    facts: dict[str, Any] = {"bucket": dest.bucket, "prefix": dest.prefix}
    problems: list[str] = []
    notices: list[str] = []
    s3 = dest.client
    bucket = dest.bucket
    required_days = required.period.total_seconds() / 86400
    facts["required_days"] = required_days
    facts["required_mode"] = "COMPLIANCE" if required.mode is LockMode.LOCKED else "GOVERNANCE"

    try:
        dest._call(f"head bucket {bucket}", s3.head_bucket, Bucket=bucket)
        facts["exists"] = True
    except DestinationError as exc:
        facts["exists"] = False
        cause = exc.__cause__
        status = (
            cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(cause, botocore.exceptions.ClientError)
            else None
        )
        if status == 404:
            problems.append(f"Bucket {bucket!r} does not exist; create it with Object Lock on.")
        elif status == 403:
            problems.append(
                f"Access to bucket {bucket!r} is denied; check the credentials and the "
                "identity's s3:ListBucket/s3:PutObject/s3:GetBucketObjectLockConfiguration "
                "permissions."
            )
        else:
            problems.append(f"Bucket {bucket!r} could not be read: {exc}.")
        return CheckReport(dest.url, ok=False, worm=False, facts=facts, problems=problems)

    # Object Lock configuration (absent = not enabled).
    lock_enabled = False
    default_rule: dict[str, Any] | None = None
    try:
        conf = dest._call(
            f"get object lock configuration of {bucket}",
            s3.get_object_lock_configuration,
            Bucket=bucket,
        )
        olc = conf.get("ObjectLockConfiguration", {})
        lock_enabled = olc.get("ObjectLockEnabled") == "Enabled"
        default_rule = olc.get("Rule", {}).get("DefaultRetention")
    except DestinationError as exc:
        cause = exc.__cause__
        code = (
            cause.response.get("Error", {}).get("Code")
            if isinstance(cause, botocore.exceptions.ClientError)
            else None
        )
        if code != "ObjectLockConfigurationNotFoundError":
            problems.append(f"The Object Lock configuration of {bucket!r} is unreadable: {exc}.")
    facts["object_lock_enabled"] = lock_enabled
    if not lock_enabled:
        problems.append(
            f"Object Lock is not enabled on bucket {bucket!r}, so stored objects could be "
            "deleted or overwritten; use a bucket created with Object Lock enabled."
        )

    if default_rule:
        days = default_rule.get("Days") or _DAYS_PER_YEAR * int(default_rule.get("Years") or 0)
        facts["default_retention"] = {"mode": default_rule.get("Mode"), "days": days}
        if days < required_days:
            notices.append(
                f"The bucket's default retention ({default_rule.get('Mode')}, {days} days) is "
                f"shorter than the required {required_days:g} days; auditlock sets "
                "retention on every object it writes, but other writers get the default."
            )
    else:
        facts["default_retention"] = None
        if lock_enabled:
            notices.append(
                "The bucket has no default retention rule; auditlock sets retention on "
                "every object it writes."
            )

    try:
        versioning = dest._call(
            f"get versioning of {bucket}", s3.get_bucket_versioning, Bucket=bucket
        )
        facts["versioning"] = versioning.get("Status", "Disabled")
    except DestinationError as exc:
        facts["versioning"] = None
        problems.append(f"The versioning state of {bucket!r} is unreadable: {exc}.")
    if facts["versioning"] not in (None, "Enabled"):
        problems.append(
            f"Versioning on bucket {bucket!r} is {facts['versioning']}, not Enabled; Object "
            "Lock needs versioning so that no write can replace a locked version."
        )

    if required.mode is LockMode.UNLOCKED:
        notices.append(
            "The required mode is GOVERNANCE: an identity with s3:BypassGovernanceRetention "
            "can shorten or remove retention; use COMPLIANCE (Locked) for SOC 2 evidence."
        )
    # A write probe would leave an undeletable object behind in a locked bucket.
    facts["writable"] = None
    return CheckReport(
        dest.url,
        ok=not problems,
        worm=lock_enabled and facts["versioning"] == "Enabled",
        facts=facts,
        problems=problems,
        notices=notices,
    )
