"""AuditPolicySpec validation: what the schema cannot say, the model does."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from auditlock.policy import parse_spec


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "payments"}},
        "destination": {"s3": {"bucket": "audit-bucket", "prefix": "prod/payments"}},
        "retention": {"days": 365, "mode": "Locked"},
    }
    spec.update(overrides)
    return spec


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(_spec())
    assert spec.destination.url == "s3://audit-bucket/prod/payments"
    assert spec.enforcement == "optional"
    assert spec.delivery.batch_size == 1000
    assert spec.delivery.spool_limit_mib == 256
    assert spec.sources.forward.port == 24224
    assert spec.categories == ["access", "authorization", "data", "configuration", "alert"]


def test_camel_case_round_trip() -> None:
    spec = parse_spec(_spec(delivery={"spoolLimitMiB": 64, "maxDelayMs": 500}))
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["delivery"]["spoolLimitMiB"] == 64
    assert parse_spec(dumped) == spec


@pytest.mark.parametrize(
    ("destination", "needle"),
    [
        ({}, "exactly one of gcs, s3 or file must be set, got 0"),
        (
            {"s3": {"bucket": "abc"}, "gcs": {"bucket": "abc"}},
            "exactly one of gcs, s3 or file must be set, got 2 (gcs, s3)",
        ),
    ],
)
def test_exactly_one_destination(destination: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(_spec(destination=destination))


@pytest.mark.parametrize("days", [0, -5])
def test_retention_must_be_positive(days: int) -> None:
    with pytest.raises(ValidationError, match=r"retention\.days"):
        parse_spec(_spec(retention={"days": days}))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="destinaton"):
        parse_spec({**_spec(), "destinaton": {}})


def test_bad_filter_and_selector_are_explained() -> None:
    with pytest.raises(ValidationError, match=r"filters\.exclude\.0\.values"):
        parse_spec(_spec(filters={"exclude": [{"field": "actor.name", "values": []}]}))
    with pytest.raises(ValidationError, match="operator In needs at least one value"):
        parse_spec(_spec(selector={"matchExpressions": [{"key": "a", "operator": "In"}]}))


def test_file_and_gcs_urls() -> None:
    assert parse_spec(_spec(destination={"file": {"path": "/data"}})).destination.url == (
        "file:///data"
    )
    gcs = parse_spec(_spec(destination={"gcs": {"bucket": "b-1", "prefix": "/x/"}}))
    assert gcs.destination.url == "gs://b-1/x"
