"""The alerting rig is the real thing: a real Alertmanager groups, routes and resolves
alerts into the test's webhook receiver, and a real Prometheus scrapes, evaluates rule
files and sends what fires to that Alertmanager."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import yaml

from tests.servers.alertmanager import Alertmanager
from tests.servers.prometheus import Prometheus


def _now(offset_s: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return moment.isoformat().replace("+00:00", "Z")


def test_alertmanager_groups_alerts_and_sends_their_resolution(
    alertmanager: Alertmanager,
) -> None:
    tid = uuid.uuid4().hex
    with alertmanager.routed(group_by=["alertname", "test"]):
        alertmanager.post_alerts(
            [
                {
                    "labels": {"alertname": "RigCheck", "test": tid, "stream": stream},
                    "annotations": {"summary": f"stream {stream}"},
                    "startsAt": _now(),
                }
                for stream in ("a", "b")
            ]
        )
        grouped = alertmanager.receiver.wait_for(
            lambda n: n.group_labels.get("test") == tid and len(n.alerts) == 2
        )
        assert grouped.payload["status"] == "firing"
        assert grouped.group_labels == {"alertname": "RigCheck", "test": tid}
        assert {a["labels"]["stream"] for a in grouped.alerts} == {"a", "b"}
        assert {a["annotations"]["summary"] for a in grouped.alerts} == {"stream a", "stream b"}
        assert len(alertmanager.alerts(test=tid)) == 2

        # An alert whose endsAt has passed is resolved; Alertmanager says so.
        alertmanager.post_alerts(
            [{"labels": {"alertname": "RigCheck", "test": tid, "stream": "a"}, "endsAt": _now()}]
        )
        resolved = alertmanager.receiver.wait_for_alert(status="resolved", test=tid, stream="a")
        assert resolved["labels"]["alertname"] == "RigCheck"


def test_prometheus_scrapes_evaluates_and_fires_into_alertmanager(
    prometheus: Prometheus, alertmanager: Alertmanager, tmp_path: Path
) -> None:
    tid = uuid.uuid4().hex
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "rig",
                        "rules": [
                            {
                                "alert": "RigTargetUp",
                                "expr": f'up{{test="{tid}"}} == 1',
                                "for": "2s",
                                "labels": {"severity": "info"},
                                "annotations": {"summary": "{{ $labels.instance }} is up"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    prometheus.alertmanager_url = alertmanager.url
    try:
        # Prometheus scrapes its own /metrics: a real target, no extra process.
        target = f"127.0.0.1:{prometheus.port}"
        with prometheus.scraping([target], [rules], labels={"test": tid}) as job:
            prometheus.wait_for_target_up(job)
            assert prometheus.query(f'prometheus_build_info{{job="{job}"}}')
            pending = prometheus.wait_for_alert("RigTargetUp", state="pending", test=tid)
            assert pending["labels"]["job"] == job
            prometheus.wait_for_alert("RigTargetUp", test=tid)

            routed = alertmanager.receiver.wait_for_alert(test=tid)
            assert routed["labels"]["severity"] == "info"
            assert routed["annotations"]["summary"] == f"{target} is up"
    finally:
        prometheus.alertmanager_url = None
        prometheus.reload()
