"""Every alert is itself an event in the trail: `alert.fired` and `alert.resolved`.

The event says what fired (rule, alert name, severity, labels, summary), when (startsAt,
endsAt) and on which events (their stream, id, time and, where known, seq), so an
auditor reading the verified trail sees what was alerted and when (docs/FORMAT.md
"Alert events", docs/alerts.md). `store` is how the caller's events reach a spool: the
collector commits to its own intake, the operator posts to its collector's HTTP intake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from auditlock.alerts.engine import ALERT_ACTOR, Transition
from auditlock.alerts.receivers import ReceiverError
from auditlock.alerts.receivers.wire import rfc3339

Store = Callable[[list[dict[str, Any]]], Awaitable[None]]


def alert_event(transition: Transition) -> dict[str, Any]:
    """The ledger event recording one alert transition (the collector adds id and time,
    or keeps the ones given)."""
    alert = transition.alert
    namespace, _, name = alert.rule.partition("/")
    action = "alert.resolved" if alert.resolved else "alert.fired"
    details: dict[str, Any] = {
        "alert": {
            "name": alert.name,
            "rule": alert.rule,
            "severity": alert.severity,
            "summary": alert.summary,
            "labels": dict(alert.labels),
            "fingerprint": alert.fingerprint,
            "starts_at": rfc3339(alert.starts_at),
            "count": alert.count,
        },
        "events": [r.as_dict() for r in alert.events],
    }
    if alert.description:
        details["alert"]["description"] = alert.description
    if alert.ends_at is not None:
        details["alert"]["ends_at"] = rfc3339(alert.ends_at)
    target: dict[str, Any] = {"resource": "auditalertrules", "name": name or alert.name}
    if namespace and namespace != "builtin":
        target["namespace"] = namespace
    return {
        "category": "alert",
        "action": action,
        "outcome": "success",
        "actor": {"kind": "system", "name": ALERT_ACTOR},
        "target": target,
        "details": details,
    }


class TrailReceiver:
    def __init__(self, store: Store) -> None:
        self.name = "trail"
        self._store = store

    async def send(self, batch: Sequence[Transition]) -> None:
        events = [alert_event(t) for t in batch if t.change != "updated"]
        if not events:
            return
        try:
            await self._store(events)
        except ReceiverError:
            raise
        except Exception as exc:
            raise ReceiverError(f"alert events not stored: {exc}") from exc

    async def close(self) -> None:
        return None
