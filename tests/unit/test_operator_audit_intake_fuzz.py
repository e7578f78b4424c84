"""Whatever a holder of the audit token sends to /audit, parsing answers a list or a
ValueError (the route's 400), and mapping an event answers an event or None: never an
exception, which would be the route's 500."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from auditlock.operator.audit_events import from_audit_event
from auditlock.operator.webhook_server import parse_event_list
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
