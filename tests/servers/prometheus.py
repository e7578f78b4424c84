"""A real Prometheus (Debian's `prometheus`, 2.42) for tests: it scrapes the targets a test
gives every second and evaluates the test's rule files every second.

`Prometheus` runs on a free 127.0.0.1 port with its own TSDB folder and
`--web.enable-lifecycle`, so a test changes what it scrapes and evaluates with a config
reload instead of a new process (about 0.1 s instead of 1-2 s):

    def test_x(prometheus, tmp_path):
        with prometheus.scraping(["127.0.0.1:9102"], rule_files=[rules],
                                 labels={"namespace": "ns", "pod": "p"}) as job:
            prometheus.wait_for_target_up(job)
            alert = prometheus.wait_for_alert("AuditlockSpoolNearlyFull", job=job)

Each `scraping` block gets a job name of its own (returned), added as the `job` label
to every series and alert it scrapes: match on it, since earlier tests' series stay in
the session's TSDB (stale, but there). Rule files are loaded as they are, so a test can
feed the chart's own rules file.

Fixture: `prometheus` (session-wide). `alertmanager_url=` sends its alerts to an
Alertmanager (tests/servers/alertmanager.py).
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.servers.prom_process import PromProcess

INTERVAL = "1s"  # scrape and rule evaluation: a `for: 3s` rule fires within ~5 s


@dataclass
class ScrapeJob:
    name: str
    targets: list[str]
    labels: dict[str, str]
    metrics_path: str = "/metrics"


@dataclass
class Prometheus(PromProcess):
    label: ClassVar[str] = "prometheus"
    binary_name: ClassVar[str] = "prometheus"
    binary_env: ClassVar[str] = "AUDITLOCK_PROMETHEUS"

    jobs: list[ScrapeJob] = field(default_factory=list)
    rule_files: list[Path] = field(default_factory=list)
    alertmanager_url: str | None = None

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "metrics_path": job.metrics_path,
                    "scrape_timeout": INTERVAL,
                    "static_configs": [{"targets": job.targets, "labels": job.labels}],
                }
                for job in self.jobs
            ],
        }
        if self.alertmanager_url:
            host = urllib.parse.urlsplit(self.alertmanager_url).netloc
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        return config

    def own_flags(self) -> list[str]:
        return [f"--storage.tsdb.path={self.workdir / 'data'}", "--web.enable-lifecycle"]

    @contextlib.contextmanager
    def scraping(
        self,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        *,
        labels: dict[str, str] | None = None,
        metrics_path: str = "/metrics",
    ) -> Iterator[str]:
        """Scrape `targets` ("host:port") and evaluate `rule_files` while the block runs;
        yields the job's name. `labels` are added to every scraped series, as a
        ServiceMonitor adds `namespace`, `pod`, `container`."""
        job = ScrapeJob(f"t-{uuid.uuid4().hex[:12]}", list(targets), dict(labels or {}),
                        metrics_path)  # fmt: skip
        self.jobs.append(job)
        self.rule_files.extend(rule_files)
        self.reload()
        try:
            yield job.name
        finally:
            self.jobs.remove(job)
            for path in rule_files:
                self.rule_files.remove(path)
            self.reload()

    def api(self, path: str, **params: str) -> Any:
        """`data` of a `/api/v1/...` answer (fails on an error answer)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = self.get_json(f"/api/v1/{path}{query}")
        if answer.get("status") != "success":
            raise AssertionError(f"Prometheus /api/v1/{path} answered {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (`[{"metric": {...}, "value": [t, "v"]}, ...]`)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Active alerts (`GET /api/v1/alerts`: `labels`, `annotations`, `state` pending or
        firing, `activeAt`, `value`) whose labels include `labels`."""
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return [a for a in found if all(a["labels"].get(k) == v for k, v in labels.items())]

    def rule_groups(self) -> list[dict[str, Any]]:
        """`GET /api/v1/rules`: the loaded groups, each rule with its health and error."""
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def wait_for_alert(
        self, alertname: str, state: str = "firing", timeout: float = 30.0, **labels: str
    ) -> dict[str, Any]:
        """The first active alert named `alertname` in `state` whose labels include
        `labels`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for alert in self.alerts(alertname=alertname, **labels):
                if alert["state"] == state:
                    return alert
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Prometheus has no {state} alert {alertname} {labels} after {timeout:.0f} s; "
                    f"active alerts: {self.alerts()}; rules: {self._rule_health()}"
                )
            time.sleep(0.2)

    def wait_for_target_up(self, job: str, timeout: float = 15.0) -> None:
        """Wait until every target of `job` was scraped successfully."""
        deadline = time.monotonic() + timeout
        while True:
            targets = [
                t for t in self.api("targets")["activeTargets"] if t["labels"].get("job") == job
            ]
            if targets and all(t["health"] == "up" for t in targets):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Prometheus job {job} not up after {timeout:.0f} s: {targets}"
                )
            time.sleep(0.2)

    def _rule_health(self) -> list[tuple[str, str, str]]:
        return [
            (rule["name"], rule.get("health", ""), rule.get("lastError", ""))
            for group in self.rule_groups()
            for rule in group["rules"]
        ]


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with Prometheus.started(tmp_path_factory.mktemp("prometheus")) as server:
        yield server
