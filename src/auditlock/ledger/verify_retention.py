"""Step 4: retention (docs/FORMAT.md 11.4). Codes: `not-locked`, `retention-short`,
`retention-unreadable` (a finding with --require-retention, else a warning)."""

from __future__ import annotations

from datetime import UTC

from auditlock.ledger.report import Finding, ObjectInfo
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify_findings import Place
from auditlock.sinks.base import DestinationError, ObjectRetention

# Writers compute retain-until from their own clock, stores report write times from
# theirs: tolerate this much disagreement before calling a lock too short.
RETENTION_CLOCK_SKEW_NS = 300 * 1_000_000_000


def locked_long_enough(
    name: str,
    info: ObjectRetention | Exception,
    days: float | None,
    signed_time: int | None,
    now_ns: int,
) -> tuple[ObjectInfo | None, list[Finding]]:
    """What the store says of one object's lock (listed in the report), and whether it
    holds for `days` after the object was written (--require-retention)."""
    here = Place()
    if isinstance(info, DestinationError):
        # Only a finding when locks were asked for: otherwise an unreadable record
        # (file:// metadata anyone can write) must not fail an intact trail.
        report = here.find if days is not None else here.warn
        return None, [report("retention-unreadable", str(info), object=name)]
    if isinstance(info, Exception):
        raise info
    until = info.retain_until
    listed = ObjectInfo(
        name=name,
        mode=info.mode.value if info.mode else None,
        retain_until=until.isoformat() if until else None,
        legal_hold=info.legal_hold,
    )
    if days is None or info.legal_hold:
        return listed, []
    if info.mode is None or until is None:
        return listed, [here.find("not-locked", "object has no retention lock", object=name)]
    # "Written" is when the store says it wrote the object (the lock started then);
    # a store that does not say: the signed time of the checkpoint that covers the
    # object; failing both, now.
    if info.written_at is not None:
        written = int(info.written_at.astimezone(UTC).timestamp() * 1e9)
    else:
        written = signed_time if signed_time is not None else now_ns
    needed = written + int(days * 86400 * 1e9) - RETENTION_CLOCK_SKEW_NS
    until_ns = int(until.astimezone(UTC).timestamp() * 1e9)
    if until_ns < needed:
        return listed, [
            here.find(
                "retention-short",
                f"locked until {until.isoformat()}, less than {days:g} days after "
                f"{format_ns(written)}",
                object=name,
            )
        ]
    return listed, []
