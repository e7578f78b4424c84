"""Status conditions the Kubernetes way: type, status, reason, message, and a
lastTransitionTime that only moves when the status changes."""

from __future__ import annotations

import datetime as dt
from typing import Any

READY = "Ready"
DESTINATION_LOCKED = "DestinationLocked"
INJECTING = "Injecting"
COLLECTOR_ISOLATED = "CollectorIsolated"
ALL_PODS_AUDITED = "AllPodsAudited"
# Written by continuous verification (trail_verification.py); every status write of the
# operator derives it again from status.verification, so it is never lost or stale.
TRAIL_VERIFIED = "TrailVerified"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str, ok: bool | None, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge(previous: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New conditions, keeping each one's lastTransitionTime when its status is unchanged."""
    old = {c.get("type"): c for c in previous or [] if isinstance(c, dict)}
    merged = []
    stamp = now()
    for cond in new:
        before = old.get(cond["type"])
        same = before is not None and before.get("status") == cond["status"]
        last = before.get("lastTransitionTime") if same and before else None
        merged.append({**cond, "lastTransitionTime": last or stamp})
    return merged


def trail_verified(status: dict[str, Any] | None, generation: int | None) -> dict[str, Any] | None:
    """The TrailVerified condition that `status.verification` calls for (None before the
    first run): True on PASS, False on FAIL, Unknown when the run had no verdict."""
    verification = (status or {}).get("verification")
    if not isinstance(verification, dict) or "result" not in verification:
        return None
    result = verification.get("result")
    ok = True if result == "PASS" else False if result == "FAIL" else None
    return condition(
        TRAIL_VERIFIED,
        ok,
        str(verification.get("reason") or "Unknown"),
        str(verification.get("message") or ""),
        generation,
    )


def with_trail_verified(
    status: dict[str, Any] | None, conditions: list[dict[str, Any]], generation: int | None
) -> list[dict[str, Any]]:
    """`conditions` with TrailVerified as `status.verification` says (replacing any)."""
    kept = [c for c in conditions if c.get("type") != TRAIL_VERIFIED]
    verified = trail_verified(status, generation)
    return kept if verified is None else [*kept, verified]
