"""PolicyStatusMetrics: each policy's status as gauges, none kept past its TTL."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from auditlock.operator.status_metrics import PolicyStatusMetrics
from tests.servers.sidecar import metric_value

READY = {"type": "Ready", "status": "True", "reason": "PolicyInForce"}
AUDITED = {"type": "AllPodsAudited", "status": "False", "reason": "PodsWithoutCollector"}


def scrape(metrics: PolicyStatusMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(metrics)
    return generate_latest(registry).decode()


def test_counts_and_conditions_are_exported_and_partial_writes_keep_the_rest() -> None:
    metrics = PolicyStatusMetrics(ttl_seconds=60)
    metrics.observe("shop", "p", {"podsSelected": 4, "podsUnaudited": 3,
                                  "conditions": [READY, AUDITED]})  # fmt: skip
    # A later write without pod counts (a failed reconcile) leaves them as they were.
    failed = {**READY, "status": "False", "reason": "DestinationUnreachable"}
    metrics.observe("shop", "p", {"conditions": [failed]})
    text = scrape(metrics)
    who = {"namespace": "shop", "policy": "p"}
    assert metric_value(text, "auditlock_operator_policy_pods", state="unaudited", **who) == 3
    assert metric_value(text, "auditlock_operator_policy_pods", state="selected", **who) == 4
    assert 'state="injected"' not in text  # never written: not invented as 0
    assert metric_value(text, "auditlock_operator_policy_condition", condition="Ready",
                        status="false", reason="DestinationUnreachable", **who) == 1  # fmt: skip
    assert metric_value(text, "auditlock_operator_policy_condition", condition="Ready",
                        status="true", **who) == 0  # fmt: skip


def test_a_status_older_than_the_ttl_or_a_deleted_policy_is_not_exported() -> None:
    now = [1000.0]
    metrics = PolicyStatusMetrics(ttl_seconds=180, clock=lambda: now[0])
    metrics.observe("shop", "old", {"podsUnaudited": 2})
    metrics.observe("shop", "gone", {"podsUnaudited": 1})
    metrics.forget("shop", "gone")
    now[0] += 180
    assert 'policy="old"' in scrape(metrics)
    assert 'policy="gone"' not in scrape(metrics)
    now[0] += 0.001
    assert 'policy="old"' not in scrape(metrics)
    metrics.observe("shop", "old", {"podsSelected": 1})  # written again: exported again
    assert 'policy="old"' in scrape(metrics)
