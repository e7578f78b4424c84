"""Each AuditPolicy's status as Prometheus gauges, so alerts and dashboards see what
`kubectl get auditpolicy` shows: pod counts (selected pods running without a collector
above all) and the status conditions.

    auditlock_operator_policy_pods{namespace, policy, state}    state: selected, injected,
                                                                stale, unaudited
    auditlock_operator_policy_condition{namespace, policy, condition, status, reason}  1

Only the replica that reconciles (the peering leader) writes status, so only it has
fresh values; a status older than `ttl_seconds` (a few refresh periods) is no longer
exported, so a replica that stood down stops reporting what it last saw instead of
contradicting the leader.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

POD_FIELDS = {
    "selected": "podsSelected",
    "injected": "podsInjected",
    "stale": "podsStale",
    "unaudited": "podsUnaudited",
}


class PolicyStatusMetrics(Collector):
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        # (namespace, policy) -> (clock() at the last write, merged status)
        self._latest: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def observe(self, namespace: str, policy: str, status: dict[str, Any]) -> None:
        """A status the operator just wrote (fields it left out keep their last value,
        as they do in the object)."""
        _, before = self._latest.get((namespace, policy), (0.0, {}))
        self._latest[(namespace, policy)] = (self._clock(), {**before, **status})

    def forget(self, namespace: str, policy: str) -> None:
        self._latest.pop((namespace, policy), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pods = GaugeMetricFamily(
            "auditlock_operator_policy_pods",
            "Pods of each AuditPolicy by state: selected, injected (carrying its collector), "
            "stale (older collector configuration), unaudited (selected, running without "
            "a collector)",
            labels=["namespace", "policy", "state"],
        )
        conditions = GaugeMetricFamily(
            "auditlock_operator_policy_condition",
            "Each AuditPolicy status condition (1), with its status (true, false, unknown) "
            "and reason",
            labels=["namespace", "policy", "condition", "status", "reason"],
        )
        oldest = self._clock() - self.ttl_seconds
        for (namespace, policy), (seen, status) in list(self._latest.items()):
            if seen < oldest:
                continue
            for state, field in POD_FIELDS.items():
                if isinstance(status.get(field), int):
                    pods.add_metric([namespace, policy, state], status[field])
            for condition in status.get("conditions") or []:
                conditions.add_metric(
                    [
                        namespace,
                        policy,
                        str(condition.get("type", "")),
                        str(condition.get("status", "Unknown")).lower(),
                        str(condition.get("reason", "")),
                    ],
                    1,
                )
        yield pods
        yield conditions

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
