"""The certificate endpoint's parsing of what a client sends and what TokenReview answers:
hostile input is refused with a status and a reason, never an exception."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.keys import generate, raw_public
from auditlock.operator.certificates import (
    AUDIENCE,
    MAX_REQUEST_BYTES,
    Refused,
    _identity,
    bearer_token,
    parse_request,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode())))
def test_any_body_is_parsed_or_refused_with_a_status(body: bytes) -> None:
    try:
        parse_request(body)
    except Refused as refused:
        assert refused.status in (400, 413) and str(refused)


def test_a_good_body_names_its_key_and_stream() -> None:
    key = generate().public_key()
    body = {"public_key": base64.b64encode(raw_public(key)).decode(), "stream": "c_ns_pod"}
    public, stream = parse_request(json.dumps(body).encode())
    assert raw_public(public) == raw_public(key) and stream == "c_ns_pod"
    with pytest.raises(Refused, match="larger than"):
        parse_request(b" " * (MAX_REQUEST_BYTES + 1))
    with pytest.raises(Refused, match="stream id"):
        parse_request(json.dumps({**body, "stream": "../x"}).encode())


@pytest.mark.parametrize(
    "header", ["", "Basic abc", "Bearer ", "bearer x", "Bearer " + "a" * 20000]
)
def test_a_missing_or_oversized_bearer_token_is_401(header: str) -> None:
    with pytest.raises(Refused) as refused:
        bearer_token(header)
    assert refused.value.status == 401


def _review(**change: Any) -> dict[str, Any]:
    review: dict[str, Any] = {
        "authenticated": True,
        "audiences": [AUDIENCE],
        "user": {
            "username": "system:serviceaccount:team:default",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["app-0"],
                "authentication.kubernetes.io/pod-uid": ["u-1"],
            },
        },
    }
    review.update(change)
    return review


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"authenticated": False, "error": "token expired"}, 401),
        ({"audiences": ["https://kubernetes.default.svc"]}, 401),
        ({"user": {"username": "alice"}}, 403),
        ({"user": {"username": "system:serviceaccount:team:default"}}, 403),  # not pod-bound
        (
            {
                "user": {
                    "username": "system:serviceaccount:team:default",
                    "extra": {
                        "authentication.kubernetes.io/pod-name": ["a", "b"],
                        "authentication.kubernetes.io/pod-uid": ["u"],
                    },
                }
            },
            403,
        ),
        ({"user": None}, 403),
    ],
)
def test_a_review_that_proves_no_single_pod_is_refused(change: dict[str, Any], status: int) -> None:
    with pytest.raises(Refused) as refused:
        _identity(_review(**change))
    assert refused.value.status == status


def test_a_pod_bound_review_names_its_pod() -> None:
    assert _identity(_review()) == ("team", "default", "app-0", "u-1")
