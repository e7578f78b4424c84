"""Whatever arrives at the webhooks, the answer is a well-formed AdmissionReview."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.operator import admission, injection
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.policy import parse_spec
from tests.helpers.fuzz import raw_or_json

SETTINGS = injection.InjectionSettings(cluster="test", image="i", native_sidecar=True)


def _registry(enforcement: str) -> PolicyRegistry:
    registry = PolicyRegistry()
    spec = parse_spec(
        {
            "destination": {"file": {"path": "/t"}},
            "retention": {"days": 1},
            "enforcement": enforcement,
        }
    )
    registry.put(PolicyEntry("shop", "p", "u", 1, spec, "h", "t"))
    return registry


OPTIONAL, REQUIRED = _registry("optional"), _registry("required")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def _mangled_review(draw: Any) -> bytes:
    request: dict[str, Any] = {
        "uid": draw(st.one_of(st.text(max_size=5), json_values)),
        "namespace": draw(st.sampled_from(["shop", "other", None, 5])),
        "kind": draw(st.one_of(st.just({"kind": "Pod"}), json_values)),
        "object": draw(
            st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {"metadata": json_values, "spec": st.one_of(json_values, st.just({}))}
                ),
            )
        ),
    }
    return json.dumps({"request": request}).encode()


bodies = raw_or_json(json_values, lambda value: json.dumps(value).encode(), _mangled_review())


def _well_formed(answer: dict[str, Any]) -> bool:
    response = answer["response"]
    return (
        answer["kind"] == "AdmissionReview"
        and isinstance(response["uid"], str)
        and isinstance(response["allowed"], bool)
    )


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_any_body_gets_a_well_formed_answer(body: bytes) -> None:
    for registry in (OPTIONAL, REQUIRED):
        mutated = admission.mutate(body, registry, SETTINGS)
        validated = admission.validate(body, registry, SETTINGS)
        assert _well_formed(mutated) and _well_formed(validated)
        if not validated["response"]["allowed"]:
            assert validated["response"]["status"]["message"]


def test_malformed_pod_parts_are_answered_not_raised() -> None:
    shapes: list[dict[str, Any]] = [
        {"containers": 5},
        {"containers": [5]},
        {"initContainers": "x", "containers": []},
        {"containers": [{"name": "a"}], "volumes": "x"},
        {"containers": [{"name": "a"}], "volumes": [7]},
    ]
    for spec in shapes:
        for meta in ({}, {"annotations": 5}, {"annotations": {"a": 1}}, {"labels": []}):
            body = json.dumps(
                {
                    "request": {
                        "uid": "u",
                        "namespace": "shop",
                        "kind": {"kind": "Pod"},
                        "object": {"metadata": meta, "spec": spec},
                    }
                }
            ).encode()
            for registry in (OPTIONAL, REQUIRED):
                assert _well_formed(admission.mutate(body, registry, SETTINGS))
                assert _well_formed(admission.validate(body, registry, SETTINGS))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, json_values)


# Pods whose every field the isolation checks read is either well-formed or any JSON.
mounts = st.lists(
    _maybe(st.fixed_dictionaries({"name": _maybe(st.sampled_from(["auditlock-key", "data"]))})),
    max_size=2,
)
containers = st.lists(
    _maybe(
        st.fixed_dictionaries(
            {"name": _maybe(st.sampled_from(["app", "auditlock-collector"]))},
            optional={
                "image": json_values,
                "volumeMounts": _maybe(mounts),
                "env": _maybe(
                    st.lists(
                        _maybe(
                            st.fixed_dictionaries(
                                {"valueFrom": _maybe(st.just({"secretKeyRef": {"name": "s"}}))}
                            )
                        ),
                        max_size=2,
                    )
                ),
                "envFrom": _maybe(st.lists(_maybe(st.just({"secretRef": {"name": "s"}})))),
                "targetContainerName": json_values,
            },
        )
    ),
    max_size=3,
)
volumes = st.lists(
    _maybe(
        st.fixed_dictionaries(
            {"name": json_values},
            optional={
                "secret": _maybe(st.fixed_dictionaries({"secretName": json_values})),
                "projected": _maybe(
                    st.fixed_dictionaries(
                        {"sources": _maybe(st.lists(_maybe(st.just({"secret": {"name": "x"}}))))}
                    )
                ),
            },
        )
    ),
    max_size=3,
)
pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "labels": st.just({"app": "x"}),
                "annotations": st.dictionaries(
                    st.sampled_from(["auditlock.io/policy", "auditlock.io/config-hash"]),
                    st.text(max_size=4),
                ),
            }
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "containers": containers,
                "initContainers": containers,
                "ephemeralContainers": containers,
                "volumes": volumes,
                "shareProcessNamespace": json_values,
            },
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(pods, st.sampled_from(["CREATE", "UPDATE"]), _maybe(pods), st.sampled_from(["", "eph"]))
def test_any_pod_shape_is_answered_not_raised(
    pod: dict[str, Any], operation: str, old: Any, subresource: str
) -> None:
    request: dict[str, Any] = {
        "uid": "u",
        "namespace": "shop",
        "kind": {"kind": "Pod"},
        "operation": operation,
        "object": pod,
        "oldObject": old,
    }
    if subresource:
        request["subResource"] = "ephemeralcontainers"
    body = json.dumps({"request": request}).encode()
    for registry in (OPTIONAL, REQUIRED):
        assert _well_formed(admission.mutate(body, registry, SETTINGS))
        assert _well_formed(admission.validate(body, registry, SETTINGS))
