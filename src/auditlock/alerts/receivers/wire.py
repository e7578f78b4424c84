"""An alert as JSON, the one shape every receiver starts from."""

from __future__ import annotations

import datetime as dt
from typing import Any

from auditlock.alerts.engine import Alert

# Alertmanager treats an alert without endsAt as firing until resolve_timeout (5 m by
# default); auditlock sends endsAt in the future instead, as Prometheus does, and resends
# a firing alert before it passes, so an alert whose sender died resolves by itself.
FIRING_GRACE_SECONDS = 4 * 60.0


def rfc3339(seconds: float) -> str:
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_json(alert: Alert, now: float) -> dict[str, Any]:
    """Alertmanager API v2 `postableAlert`, plus nothing: labels route, annotations say."""
    ends = alert.ends_at if alert.ends_at is not None else now + FIRING_GRACE_SECONDS
    annotations = {"summary": alert.summary, "count": str(alert.count)}
    if alert.description:
        annotations["description"] = alert.description
    if alert.events:
        annotations["events"] = ", ".join(
            f"{r.stream}#{r.seq}:{r.id}" if r.seq is not None else f"{r.stream}:{r.id}"
            for r in alert.events
        )
    return {
        "labels": dict(alert.labels),
        "annotations": annotations,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(ends),
    }
