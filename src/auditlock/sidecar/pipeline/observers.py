"""Identities only auditlock's own observers may claim (docs/sidecar.md, "Who observed an
event").

The collector's own sources (the config-file watcher, the access proxy) and the
operator's cluster capture (API server audit events and watches, sent to the operator's
own collector over its HTTP intake) mark their events in ways an app could copy: an actor name,
a Forward tag, `details` members, an id prefix. An event from an app's intake (Forward
or HTTP) that carries any of these marks is refused (`reserved_identity`), so an event
with them was observed by auditlock. `details.intake.input` (set by the collector, never
by a sender) names the intake; for the operator's collector the Forward tags under
`sources.forward.observer_tag_prefix` are the operator's, so its events keep their marks.
"""

from __future__ import annotations

from typing import Any

from auditlock.alerts.engine import ALERT_ACTOR

APP_INPUTS = frozenset({"forward", "http"})
# sources/config_files/watcher.py ACTOR, app.py's spool-damage alert, and the alert
# events of alert rules (alerts/engine.py ALERT_ACTOR).
RESERVED_ACTOR_NAMES = frozenset({"auditlock-config-watcher", "auditlock-collector", ALERT_ACTOR})
# The collector's own sources' tags (config_files.TAG, access_proxy.TAG) and the
# operator's capture (operator/capture.py TAG_PREFIX).
RESERVED_TAG_PREFIXES = ("config_files", "access_proxy", "auditlock.")
# operator/audit_events.py (observed_by), sources/access_proxy/proxy.py (identity_*), and the
# members that make a record a Kubernetes API audit event (audit.k8s.io Event).
RESERVED_DETAILS = frozenset(
    {"observed_by", "identity_verified", "identity_header", "auditID", "requestURI", "stage"}
)
RESERVED_ID_PREFIXES = ("k8s-audit-",)


class ReservedIdentity(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_app_event(tag: str, actor: Any, details: dict[str, Any], event_id: Any) -> None:
    """Raise ReservedIdentity when an app's event claims to be an observer's."""
    if tag.startswith(RESERVED_TAG_PREFIXES):
        raise ReservedIdentity("tag", f"tag {tag[:80]!r} is reserved for auditlock's observers")
    name = actor if type(actor) is str else actor.get("name") if type(actor) is dict else None
    if type(name) is str and name in RESERVED_ACTOR_NAMES:  # any other type: unhashable
        raise ReservedIdentity("actor.name", f"actor {name!r} is reserved for auditlock")
    if details and not details.keys().isdisjoint(RESERVED_DETAILS):
        member = sorted(details.keys() & RESERVED_DETAILS)[0]
        raise ReservedIdentity(
            f"details.{member}", f"details.{member} is set only by auditlock's observers"
        )
    if type(event_id) is str and event_id.startswith(RESERVED_ID_PREFIXES):
        raise ReservedIdentity("id", f"id prefix of {event_id[:80]!r} is reserved for auditlock")
