"""Rules evaluated by a real collector process on its pod's events: the rules file is
read at start and again when it changes, a matching event reaches the real Alertmanager
with the collector's labels, and the alert is an `alert` event in the pod's own signed
stream, which verifies."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from auditlock.alerts.model import parse_rule_spec, plain_spec
from tests.helpers.http_intake import post
from tests.servers.alertmanager import Alertmanager
from tests.servers.sidecar import (
    SidecarProcess,
    ledger_events,
    make_config,
    open_store,
    sidecar_process,
    stored_ledger,
    wait_for,
)


def _rules_file(path: Path, alertmanager: Alertmanager, tag: str, *names: str) -> None:
    rules = [
        {
            "name": name,
            "namespace": "shop",
            "spec": plain_spec(
                parse_rule_spec(
                    {
                        "severity": "critical",
                        "summary": "{{ actor.name }} exported {{ target.name }}",
                        "labels": {"tag": tag},
                        "match": [
                            {"field": "category", "equals": "data"},
                            {"field": "action", "equals": name},
                        ],
                        "groupBy": ["actor.name"],
                    }
                )
            ),
        }
        for name in names
    ]
    path.write_text(json.dumps({"rules": rules, "alertmanager_url": alertmanager.url}))


def _export_rule(tmp_path: Path, alertmanager: Alertmanager) -> tuple[str, Path]:
    """A rules file with one rule, "export", labelled with a tag unique to the test."""
    tag = uuid.uuid4().hex
    rules = tmp_path / "alerts.json"
    _rules_file(rules, alertmanager, tag, "export")
    return tag, rules


@contextmanager
def _watching_collector(
    tmp_path: Path, alertmanager: Alertmanager
) -> Iterator[tuple[str, Path, dict[str, Any], SidecarProcess]]:
    """The export rule, and a running collector that reloads its rules file every 0.2 s:
    the rule's tag, the rules file, the collector's config, the collector."""
    tag, rules = _export_rule(tmp_path, alertmanager)
    alerts = {"rules_file": str(rules), "reload_seconds": 0.2}
    config = make_config(tmp_path, ports=True, alerts=alerts)
    with sidecar_process(tmp_path, config) as collector:
        collector.start()
        yield tag, rules, config, collector


def _post(port: int, events: list[dict[str, Any]]) -> int:
    return post(port, events)[0]


def _event(action: str, actor: str = "carol") -> dict[str, Any]:
    return {
        "category": "data",
        "action": action,
        "outcome": "success",
        "actor": {"kind": "user", "name": actor},
        "target": {"resource": "orders", "name": "q4.csv"},
    }


def test_collector_rules_fire_into_alertmanager_and_the_pods_trail(
    alertmanager: Alertmanager, tmp_path: Path
) -> None:
    with _watching_collector(tmp_path, alertmanager) as (tag, rules, config, collector):
        assert _post(collector.http_port, [_event("read"), _event("export")]) == 202
        alert = alertmanager.receiver.wait_for_alert("firing", tag=tag, alertname="export")
        assert alert["labels"]["auditlock_source"] == "collector"
        assert alert["labels"]["stream"] == "shop_api-1"
        assert alert["labels"]["actor_name"] == "carol"
        assert alert["annotations"]["summary"] == "carol exported q4.csv"
        # a new rule, without a restart
        time.sleep(0.05)  # a distinct mtime
        _rules_file(rules, alertmanager, tag, "export", "wipe")
        wait_for(lambda: collector.metric("auditlock_sidecar_alert_rules") == 2, 10, "reload")
        assert _post(collector.http_port, [_event("wipe", "mallory")]) == 202
        alertmanager.receiver.wait_for_alert("firing", tag=tag, alertname="wipe")
        assert collector.terminate() == 0
    events = stored_ledger(config).events
    fired = [e for e in events if e["category"] == "alert" and e["action"] == "alert.fired"]
    assert sorted(e["details"]["alert"]["name"] for e in fired) == ["export", "wipe"]
    export = next(e for e in events if e["action"] == "export")
    ref = next(e for e in fired if e["details"]["alert"]["name"] == "export")["details"]["events"]
    assert ref == [{"stream": "shop_api-1", "id": export["id"], "time": export["time"]}]
    assert all(e["source"]["pod"] == "api-1" for e in fired)


def test_a_bad_rules_file_keeps_the_rules_in_force(
    alertmanager: Alertmanager, tmp_path: Path
) -> None:
    with _watching_collector(tmp_path, alertmanager) as (tag, rules, _, collector):
        time.sleep(0.05)
        rules.write_text('{"rules": [{"name": "x", "namespace": "shop", "spec": {"match": [')
        wait_for(
            lambda: collector.metric("auditlock_sidecar_alert_rule_errors_total") == 1, 10, "error"
        )
        assert _post(collector.http_port, [_event("export")]) == 202
        alertmanager.receiver.wait_for_alert("firing", tag=tag, alertname="export")


def test_spool_filling_and_failing_uploads_alert_and_resolve(
    alertmanager: Alertmanager, tmp_path: Path
) -> None:
    tag, rules = _export_rule(tmp_path, alertmanager)
    store = tmp_path / "store"
    stream = f"shop_api-{tag[:6]}"
    config = make_config(
        tmp_path,
        f"file://{store}",
        ports=True,
        stream={"id": stream},
        alerts={
            "rules_file": str(rules),
            "tick_seconds": 0.2,
            # thresholds short enough for a test: anything waiting, failing for 1 s
            "spool_filling_ratio": 0.0,
            "uploads_failing_seconds": 1.0,
        },
        delivery={"retry_max_seconds": 0.5},
    )
    with sidecar_process(tmp_path, config) as collector:
        collector.start()
        wait_for(lambda: (store / "streams").exists(), 10, "the first checkpoint")
        moved = tmp_path / "store-away"
        store.rename(moved)
        store.write_text("not a directory: every upload fails")
        assert _post(collector.http_port, [_event("read")]) == 202
        for name in ("AuditlockSpoolFilling", "AuditlockUploadsFailing"):
            alert = alertmanager.receiver.wait_for_alert("firing", alertname=name, stream=stream)
            assert alert["labels"]["auditlock_source"] == "collector"
            assert alert["labels"]["pod"] == "api-1"
        store.unlink()
        moved.rename(store)
        for name in ("AuditlockSpoolFilling", "AuditlockUploadsFailing"):
            alertmanager.receiver.wait_for_alert("resolved", alertname=name, stream=stream)
        assert collector.terminate() == 0
    events = [line["event"] for line in ledger_events(open_store(f"file://{store}"))]
    names = {
        (e["action"], e["details"]["alert"]["name"]) for e in events if e["category"] == "alert"
    }
    assert ("alert.fired", "AuditlockUploadsFailing") in names
    assert ("alert.resolved", "AuditlockUploadsFailing") in names
