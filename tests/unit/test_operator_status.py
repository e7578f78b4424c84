"""How destination checks and spec errors become status conditions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from auditlock.operator import conditions as c
from auditlock.operator.destination import _judge
from auditlock.operator.reconcile import validation_message
from auditlock.policy import parse_spec
from auditlock.sinks import CheckReport


def _failed(url: str, problem: str, **facts: object) -> CheckReport:
    """A check that failed with one problem."""
    return CheckReport(url, ok=False, worm=False, facts=facts, problems=[problem])


@pytest.mark.parametrize(
    ("report", "reason", "reachable"),
    [
        (
            CheckReport("s3://b", ok=True, worm=True, facts={"exists": True}),
            "RetentionLocked",
            True,
        ),
        (CheckReport("file:///t", ok=True, worm=False, notices=["not WORM."]), "NotWorm", True),
        (
            _failed("s3://b", "Object Lock is not enabled on bucket 'b'.",
                    exists=True, object_lock_enabled=False),
            "RetentionLockMissing",
            True,
        ),
        (
            _failed("s3://b", "Bucket 'b' does not exist; create it with Object Lock on.",
                    exists=False),
            "BucketNotFound",
            False,
        ),
        (
            _failed("s3://b", "Access to bucket 'b' is denied; check the credentials.",
                    exists=False),
            "AccessDenied",
            False,
        ),
        (
            _failed("gs://b", "Bucket 'b' could not be read: timeout.", exists=None),
            "DestinationUnreachable",
            False,
        ),
    ],
)  # fmt: skip
def test_check_reports_map_to_reasons(report: CheckReport, reason: str, reachable: bool) -> None:
    state = _judge(report.url, report)
    assert (state.reason, state.reachable) == (reason, reachable)
    assert state.message.endswith(".")
    assert state.worm == (reason == "RetentionLocked")


def test_validation_message_names_the_field_in_one_sentence() -> None:
    with pytest.raises(ValidationError) as exc:
        parse_spec({"destination": {}, "retention": {"days": 0}})
    message = validation_message(exc.value)
    assert message.startswith("spec.destination: ")
    assert "(and 1 more problems)" in message and message.count(".") >= 1


def test_transition_time_moves_only_when_status_changes() -> None:
    first = c.merge(None, [c.condition(c.READY, False, "X", "m", 1)])
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = c.merge(first, [c.condition(c.READY, False, "Y", "other", 2)])
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = c.merge(first, [c.condition(c.READY, True, "Z", "ok", 2)])
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert flipped[0]["observedGeneration"] == 2
