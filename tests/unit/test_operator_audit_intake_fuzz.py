"""Whatever a holder of the audit token sends to /audit, parsing answers a list or a
ValueError (the route's 400), and mapping an event answers an event or None: never an
exception, which would be the route's 500."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from auditlock.operator.audit_events import from_audit_event
from auditlock.operator.webhook_server import parse_event_list
from auditlock.sidecar.config import SourceIdentity
from auditlock.sidecar.pipeline.normalize import Normalizer
from tests.helpers.fuzz import raw_or_json

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, json_values)


object_refs = st.fixed_dictionaries(
    {},
    optional={
        "namespace": _maybe(st.just("shop")),
        "resource": _maybe(st.sampled_from(["pods", "secrets", "configmaps", "roles"])),
        "subresource": _maybe(st.sampled_from(["exec", "attach", ""])),
        "name": json_values,
        "apiGroup": json_values,
    },
)

audit_events = st.fixed_dictionaries(
    {},
    optional={
        "stage": _maybe(st.sampled_from(["ResponseComplete", "Panic"])),
        "objectRef": _maybe(object_refs),
        "verb": _maybe(st.sampled_from(["get", "create", "delete"])),
        "auditID": json_values,
        "responseStatus": _maybe(st.fixed_dictionaries({"code": json_values})),
        "user": _maybe(
            st.fixed_dictionaries({}, optional={"username": json_values, "groups": json_values})
        ),
        "sourceIPs": json_values,
        "userAgent": json_values,
        "requestURI": json_values,
        "requestReceivedTimestamp": json_values,
        "stageTimestamp": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(audit_events)
@example({"stage": "ResponseComplete", "objectRef": {"resource": "secrets"}})  # all namespaces
def test_any_event_maps_to_an_event_or_none(event: dict[str, Any]) -> None:
    mapped = from_audit_event(event, {"shop"})
    if mapped is not None:
        if event["objectRef"].get("namespace"):
            assert mapped["target"]["namespace"] == "shop"
        else:  # a cluster-scoped request (no namespace) is in scope and stays one
            assert "namespace" not in mapped["target"]
        assert mapped["outcome"] in ("success", "failure", "unknown")
        orjson.dumps(mapped)  # what the capture queue sends must serialize


# nested up to 5,000 deep: past any recursion limit
deep_lists = st.integers(1, 5000).map(
    lambda depth: b'{"items":' + b"[" * depth + b"]" * depth + b"}"
)
event_lists = st.lists(st.one_of(audit_events, json_values), max_size=5).map(
    lambda items: orjson.dumps({"kind": "EventList", "items": items})
)
bodies = raw_or_json(json_values, orjson.dumps, deep_lists, event_lists)


@settings(max_examples=200, deadline=None)
@given(bodies)
def test_any_body_parses_to_items_or_a_value_error(body: bytes) -> None:
    try:
        items = parse_event_list(body)
    except ValueError:
        return
    assert isinstance(items, list)
    for item in items:
        if isinstance(item, dict):
            from_audit_event(item, {"shop"})


def test_nesting_beyond_orjsons_limit_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_event_list(b"[" * 100_000 + b"]" * 100_000)


# A real API server's event, then any of its members replaced by any JSON value: what a
# holder of the audit token (or a buggy API server build) can send.
GENUINE = {
    "stage": "ResponseComplete",
    "auditID": "0b8c6a0e-1f7e-4d1c-9a1e-3c5e2f1d9b7a",
    "verb": "get",
    "requestURI": "/api/v1/namespaces/shop/secrets/db",
    "objectRef": {"resource": "secrets", "namespace": "shop", "name": "db", "apiVersion": "v1"},
    "user": {"username": "alice", "groups": ["dev"]},
    "sourceIPs": ["10.0.0.1"],
    "userAgent": "kubectl/v1.31",
    "responseStatus": {"code": 200},
    "requestReceivedTimestamp": "2026-11-29T15:08:52.123456Z",
    "stageTimestamp": "2026-11-29T15:08:52.223456Z",
}
MEMBERS = [
    *sorted(GENUINE),
    *(f"objectRef.{m}" for m in ("name", "namespace", "resource", "apiGroup", "subresource")),
    "user.username",
    "impersonatedUser",
    "annotations",
]


def _replaced(changes: list[tuple[str, Any]]) -> dict[str, Any]:
    event = copy.deepcopy(GENUINE)
    for member, value in changes:
        outer, _, inner = member.partition(".")
        if not inner:
            event[outer] = value
        elif isinstance(event.get(outer), dict):
            event[outer][inner] = value
    return event


OPERATOR_COLLECTOR = Normalizer(
    SourceIdentity(cluster="rig", namespace="auditlock-system", pod="operator"),
    observer_tag_prefix="auditlock.operator",
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MEMBERS), json_values), max_size=3))
@example([("sourceIPs", ["not-an-ip"])])
@example([("auditID", "../../etc")])
@example([("requestReceivedTimestamp", "yesterday"), ("stageTimestamp", None)])
@example([("verb", "")])
def test_an_event_the_operator_maps_is_one_its_collector_stores(
    changes: list[tuple[str, Any]],
) -> None:
    """The operator forwards what it maps to its collector, which refuses an invalid
    event for good (the operator counts it and leaves it out). So whatever the API
    server's event holds, the mapped event must be one the collector accepts: an audited
    request is recorded, with what could not be used kept as text in details."""
    mapped = from_audit_event(_replaced(changes), {"shop"})
    if mapped is not None:
        mapped["details"]["cluster"] = "rig"
        OPERATOR_COLLECTOR("http", "auditlock.operator.audit", 1_764_000_000_000_000_000, mapped)
