"""Continuous verification's verdicts as Prometheus gauges (docs/operator.md,
"Continuous verification").

The verification job writes each policy's verdict into its status; every operator
replica follows the AuditPolicy list (policy_watch.py, the only writer here) and exports
the newest verdict per policy on /metrics, so an alert rule needs no Pushgateway and
sees the same answer from any replica.
"""

from __future__ import annotations

import calendar
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

Verdicts = dict[tuple[str, str], dict[str, Any]]  # (namespace, policy) -> status.verification


class TrailVerdicts(Collector):
    """The newest `status.verification` of each policy, exported at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verdicts: Verdicts = {}
        self._last_verified: dict[tuple[str, str], str] = {}

    def observe(self, namespace: str, name: str, status: Any) -> None:
        status = status if isinstance(status, dict) else {}
        record = status.get("verification")
        key = (namespace, name)
        with self._lock:
            if isinstance(record, dict) and "result" in record:
                self._verdicts[key] = record
            else:
                self._verdicts.pop(key, None)
            last = status.get("lastVerified")
            if isinstance(last, str):
                self._last_verified[key] = last
            else:
                self._last_verified.pop(key, None)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._verdicts.pop((namespace, name), None)
            self._last_verified.pop((namespace, name), None)

    def replace(self, bodies: list[dict[str, Any]]) -> None:
        with self._lock:
            self._verdicts.clear()
            self._last_verified.clear()
        for body in bodies:
            meta = body.get("metadata") or {}
            self.observe(str(meta.get("namespace", "")), str(meta.get("name", "")),
                         body.get("status"))  # fmt: skip

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["namespace", "policy"]
        verified = GaugeMetricFamily(
            "auditlock_policy_trail_verified",
            "1 when the newest continuous verification of the policy's destination passed, "
            "0 when it found problems or reached no verdict (status.verification.reason).",
            labels=labels,
        )
        findings = GaugeMetricFamily(
            "auditlock_policy_trail_findings",
            "Findings of the newest continuous verification.",
            labels=labels,
        )
        ran = GaugeMetricFamily(
            "auditlock_policy_trail_verification_timestamp_seconds",
            "When the newest continuous verification run finished (Unix time).",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "auditlock_policy_trail_last_verified_timestamp_seconds",
            "When continuous verification last reached a verdict (status.lastVerified).",
            labels=labels,
        )
        with self._lock:
            verdicts = dict(self._verdicts)
            last_verified = dict(self._last_verified)
        for (namespace, name), record in sorted(verdicts.items()):
            values = [namespace, name]
            verified.add_metric(values, 1.0 if record.get("result") == "PASS" else 0.0)
            findings.add_metric(values, float(record.get("findings") or 0))
            stamp = _seconds(record.get("time"))
            if stamp is not None:
                ran.add_metric(values, stamp)
        for (namespace, name), text in sorted(last_verified.items()):
            stamp = _seconds(text)
            if stamp is not None:
                last.add_metric([namespace, name], stamp)
        yield from (verified, findings, ran, last)


def _seconds(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None
