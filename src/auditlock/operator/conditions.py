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
