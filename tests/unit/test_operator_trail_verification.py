"""Continuous verification's verdicts: the status record, the TrailVerified condition
derived from it, and the gauges the operator exports (docs/operator.md, "Continuous
verification"). The whole path runs against the real API server in
tests/integration/test_verify_policies.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from auditlock.ledger.report import Finding, StreamSummary, VerifyReport
from auditlock.operator import conditions as c
from auditlock.operator.trail_gauges import TrailVerdicts
from auditlock.operator.trail_verification import reason_for, record_for

T = "2026-11-30T21:00:00Z"


def test_finding_codes_become_condition_reasons() -> None:
    assert reason_for("checkpoint-missing") == "CheckpointMissing"
    assert reason_for("unknown-key") == "UnknownKey"
    assert reason_for("4xx") == "Finding4xx"


def test_a_failed_run_names_its_first_finding() -> None:
    report = VerifyReport(
        url="file:///t",
        findings=[Finding("hash-mismatch", "line hash differs", stream="s", first_seq=3),
                  Finding("checkpoint-missing", "gone")],
        streams=[StreamSummary("s")],
    )  # fmt: skip
    record = record_for(report, T)
    assert record["result"] == "FAIL" and record["reason"] == "HashMismatch"
    assert record["message"].startswith("stream s seq 3: line hash differs [hash-mismatch]")
    assert record["message"].endswith("(and 1 more finding(s))")
    verified = c.trail_verified({"verification": record}, 4)
    assert verified is not None
    assert (verified["status"], verified["reason"], verified["observedGeneration"]) == (
        "False", "HashMismatch", 4)  # fmt: skip


def test_the_condition_follows_the_record_through_other_status_writes() -> None:
    record = record_for(VerifyReport(url="file:///t", events_verified=5), T)
    old = {"type": "TrailVerified", "status": "False", "reason": "Old", "message": "old"}
    status = {"verification": record, "conditions": [{"type": "Ready", "status": "True"}, old]}
    kept = c.with_trail_verified(status, [{"type": "Ready", "status": "True"}], 1)
    assert [x["type"] for x in kept] == ["Ready", "TrailVerified"]
    assert kept[1]["status"] == "True" and kept[1]["reason"] == "TrailIntact"
    assert c.with_trail_verified({}, [{"type": "Ready"}], 1) == [{"type": "Ready"}]


def test_gauges_show_each_policys_newest_verdict() -> None:
    verdicts = TrailVerdicts()
    registry = CollectorRegistry()
    registry.register(verdicts)
    labels = {"namespace": "shop", "policy": "orders"}
    failed = {"result": "FAIL", "time": T, "reason": "HashMismatch", "findings": 2}
    verdicts.observe("shop", "orders", {"verification": failed, "lastVerified": T})
    assert registry.get_sample_value("auditlock_policy_trail_verified", labels) == 0.0
    assert registry.get_sample_value("auditlock_policy_trail_findings", labels) == 2.0
    stamp = registry.get_sample_value(
        "auditlock_policy_trail_last_verified_timestamp_seconds", labels
    )
    assert stamp == 1796072400.0
    verdicts.observe("shop", "orders", {"verification": {**failed, "result": "PASS"}})
    assert registry.get_sample_value("auditlock_policy_trail_verified", labels) == 1.0
    verdicts.forget("shop", "orders")
    assert registry.get_sample_value("auditlock_policy_trail_verified", labels) is None
