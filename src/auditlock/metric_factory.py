"""Prometheus metrics defined on one registry under one name prefix.

Each component keeps its own registry (so tests can run several collectors or operators
in one process) and its own prefix (`auditlock_sidecar`, `auditlock_operator`); a
`MetricFactory` carries both, so a definition states only what is particular to the
metric: the rest of its name, its help text and its label names.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MetricFactory:
    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.registry = registry
        self.prefix = prefix

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(f"{self.prefix}_{name}", documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(f"{self.prefix}_{name}", documentation, labels, registry=self.registry)

    def histogram(
        self, name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(
            f"{self.prefix}_{name}",
            documentation,
            labels,
            buckets=buckets,
            registry=self.registry,
        )
