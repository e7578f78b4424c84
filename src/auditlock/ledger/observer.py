"""Who observed an event: which intake of auditlock recorded it (docs/FORMAT.md section 3,
"Who observed an event").

An event is a claim by whoever sent it; what auditlock itself saw is which of its intakes
received it. The collector records that in `details.intake` {"input", "tag"}
(auditlock.sidecar.pipeline.normalize) and replaces any `intake` member a sender wrote, so
an app cannot set it; the operator's own collector receives the API server's events
(details.observed_by) under the `auditlock.operator.` tag. `verify` counts the events of
each stream by observer, so an auditor sees at once which events an app merely claims.
"""

from __future__ import annotations

from typing import Any

APP = "app"  # the Forward or HTTP intake: what the application says
CONFIG_WATCHER = "config-watcher"  # the collector's own watch of mounted config files
ACCESS_PROXY = "access-proxy"  # the collector's HTTP proxy in front of the app
API_SERVER = "api-server"  # the Kubernetes API server (audit webhook or watch), via the operator
UNMARKED = "unmarked"  # no details.intake: written by another writer (synth, the library)
OBSERVERS = (APP, CONFIG_WATCHER, ACCESS_PROXY, API_SERVER, UNMARKED)

_BY_INPUT = {"config_files": CONFIG_WATCHER, "access_proxy": ACCESS_PROXY}
_APP_INPUTS = frozenset({"forward", "http"})
_OPERATOR_TAG = "auditlock.operator."
_API_SERVER_MARKS = frozenset({"kube-apiserver-audit", "watch"})


def observer_of(event: Any) -> str:
    """The observer of a (parsed) event; UNMARKED when it carries no intake mark."""
    return observer_of_details(event.get("details") if type(event) is dict else None)


def observer_of_details(details: Any) -> str:
    """The observer of an event, given its `details` (anything else: UNMARKED)."""
    intake = details.get("intake") if type(details) is dict else None
    if type(intake) is not dict:
        return UNMARKED
    source = intake.get("input")
    if source in _APP_INPUTS:
        tag = intake.get("tag")
        mark = details.get("observed_by")
        if type(tag) is str and tag.startswith(_OPERATOR_TAG) and type(mark) is str:
            return API_SERVER if mark in _API_SERVER_MARKS else APP
        return APP
    if type(source) is str:
        return _BY_INPUT.get(source, UNMARKED)
    return UNMARKED
