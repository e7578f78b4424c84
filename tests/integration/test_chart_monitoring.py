"""The chart's monitoring: the PrometheusRule passes `promtool check rules` and its unit
tests (`promtool test rules`, tests/data/prometheus-rules-test.yaml) exactly as rendered;
ServiceMonitor, PodMonitor, PrometheusRule and the Grafana dashboard render only when
enabled; the dashboard's queries use only metrics the real collector and operator serve.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.http_intake import padded, post_bytes
from tests.integration.chart_helpers import CHART, by_kind, named, one, render
from tests.servers.alertmanager import Alertmanager
from tests.servers.auditlock_operator import RunningOperator
from tests.servers.disk_faults import fill, small_tmpfs, unfill
from tests.servers.kube_controlplane import KubeControlPlane
from tests.servers.prom_process import debian_binary
from tests.servers.prometheus import Prometheus
from tests.servers.sidecar import make_config, sidecar_process, wait_for

DATA = Path(__file__).resolve().parents[1] / "data"
RULES_TEST = DATA / "prometheus-rules-test.yaml"
MONITORING_KINDS = {"PrometheusRule", "ServiceMonitor", "PodMonitor"}

ALL_ON = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = debian_binary("promtool", "AUDITLOCK_PROMTOOL")
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=120, check=False
    )


def rendered_rules(helm_path: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `spec` of the chart's PrometheusRule: a Prometheus rule file."""
    merged = copy.deepcopy(values or {})
    merged.setdefault("monitoring", {}).setdefault("prometheusRule", {})["enabled"] = True
    spec: dict[str, Any] = one(render(helm_path, merged), "PrometheusRule")["spec"]
    return spec


def alerts_of(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def dashboard_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [
        o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")
    ]
    return config_map


# -- rendered only when enabled ---------------------------------------------------------


@pytest.fixture(scope="module")
def default_objects(helm_path: Path) -> list[dict[str, Any]]:
    return render(helm_path)


@pytest.fixture(scope="module")
def all_on(helm_path: Path) -> list[dict[str, Any]]:
    return render(helm_path, ALL_ON)


@pytest.fixture(scope="module")
def shipped_rules(all_on: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(all_on, "PrometheusRule")["spec"]
    return spec


def test_monitoring_objects_render_only_when_enabled(
    helm_path: Path, default_objects: list[dict[str, Any]], all_on: list[dict[str, Any]]
) -> None:
    assert not [o for o in default_objects if o["kind"] in MONITORING_KINDS]
    switches = {
        "serviceMonitor": {
            ("Service", "audit-auditlock-metrics"),
            ("ServiceMonitor", "audit-auditlock"),
        },
        "podMonitor": {("PodMonitor", "audit-auditlock-collectors")},
        "prometheusRule": {("PrometheusRule", "audit-auditlock")},
        "grafanaDashboard": {("ConfigMap", "audit-auditlock-dashboard")},
    }

    def added(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        return names - {(o["kind"], o["metadata"]["name"]) for o in default_objects}

    assert added(all_on) == set().union(*switches.values())
    # Each switch brings its own objects and no other's (two renders cover all four).
    for pair in (("serviceMonitor", "grafanaDashboard"), ("podMonitor", "prometheusRule")):
        objects = render(helm_path, {"monitoring": {k: {"enabled": True} for k in pair}})
        assert added(objects) == switches[pair[0]] | switches[pair[1]], pair


def test_monitors_scrape_the_ports_that_serve_metrics(all_on: list[dict[str, Any]]) -> None:
    objects = all_on
    deployment = one(objects, "Deployment")
    ports = {
        port["name"]: (container["name"], port["containerPort"])
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    service = named(objects, "Service", "-metrics")
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports[targets["metrics"]][0] == "operator"
    assert ports[targets["collector-metrics"]] == ("collector", 9880)

    monitor = one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    webhook = named(objects, "Service", "-webhook")
    assert not selector.items() <= webhook["metadata"]["labels"].items()  # scraped once
    jobs = {e["port"]: e["relabelings"][0]["replacement"] for e in monitor["spec"]["endpoints"]}
    assert jobs == {"metrics": "auditlock-operator", "collector-metrics": "auditlock-collector"}

    # Injected collectors: a pod as the operator's injection patches it (native sidecar
    # or classic container) carries the label the PodMonitor selects and the port it names.
    from auditlock.operator import injection
    from auditlock.operator.registry import PolicyEntry
    from auditlock.policy import parse_spec

    pod_monitor = one(objects, "PodMonitor")
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    (requirement,) = pod_monitor["spec"]["selector"]["matchExpressions"]
    assert requirement["operator"] == "Exists"
    spec = parse_spec({"destination": {"file": {"path": "/t"}}, "retention": {"days": 1}})
    entry = PolicyEntry("shop", "p", "u", 1, spec, "h", "t")
    app = {"metadata": {"name": "api", "labels": {"app": "api"}},
           "spec": {"containers": [{"name": "app", "image": "app"}]}}  # fmt: skip
    for native in (True, False):
        settings = injection.InjectionSettings(cluster="c", image="i", native_sidecar=native)
        pod = injection.apply_patch(app, injection.injection_patch(app, entry, settings))
        assert requirement["key"] in pod["metadata"]["labels"]
        containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
        assert ports.get(endpoint["port"]) == 9880, (native, ports)
    assert endpoint["relabelings"][0]["replacement"] == "auditlock-collector"


def test_the_prometheus_operator_crds_accept_the_monitoring_objects_unchanged(
    helm_path: Path,
    prometheus_operator_crds: KubeControlPlane,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    """The real API server, with the Prometheus Operator's own CRDs, validates what the
    chart renders strictly (an unknown or misplaced field is an error, not pruned)."""
    values = copy.deepcopy(ALL_ON)
    values["monitoring"]["podMonitor"]["namespaces"] = ["shop"]
    values["monitoring"]["serviceMonitor"]["scrapeTimeout"] = "10s"
    objects = [
        o
        for o in render(helm_path, values, namespace=kube_namespace)
        if o["kind"] in MONITORING_KINDS
    ]
    assert {o["kind"] for o in objects} == MONITORING_KINDS
    manifest = tmp_path / "monitoring.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    kube = prometheus_operator_crds
    applied = kube.kubectl(
        "apply", "--validate=strict", "-n", kube_namespace, "-f", str(manifest), "-o", "json",
        check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    stored = {item["kind"]: item for item in json.loads(applied.stdout)["items"]}
    for sent in objects:
        assert stored[sent["kind"]]["spec"] == sent["spec"], f"{sent['kind']} changed when stored"


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar(helm_path: Path) -> None:
    objects = render(
        helm_path,
        {
            "monitoring": {
                "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Audit"}}
            }
        },
    )
    config_map = dashboard_object(objects)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Audit"}
    shipped = (CHART / "files" / "dashboards" / "auditlock-pipeline.json").read_text()
    assert json.loads(config_map["data"]["auditlock-pipeline.json"]) == json.loads(shipped)


# -- promtool ---------------------------------------------------------------------------


def test_shipped_rules_pass_promtool_check(shipped_rules: dict[str, Any], tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(shipped_rules, sort_keys=False))
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts_of(shipped_rules))} rules found" in checked.stdout


def test_every_shipped_alert_passes_its_promtool_unit_tests(
    shipped_rules: dict[str, Any], tmp_path: Path
) -> None:
    rules = shipped_rules
    alerts = alerts_of(rules)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    suite = yaml.safe_load(RULES_TEST.read_text())
    suite["rule_files"] = ["rules.yaml"]
    tested: set[str] = set()
    for case in suite["tests"]:
        for check in case["alert_rule_test"]:
            rule = alerts[check["alertname"]]
            for expected in check["exp_alerts"]:
                tested.add(check["alertname"])
                fixed = {k: v for k, v in rule["annotations"].items() if k != "summary"}
                expected["exp_annotations"] = {**fixed, **expected["exp_annotations"]}
    assert tested == set(alerts), f"alerts without a firing unit test: {set(alerts) - tested}"
    suite_file = tmp_path / "rules-test.yaml"
    suite_file.write_text(yaml.safe_dump(suite, sort_keys=False))
    result = promtool("test", "rules", str(suite_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_thresholds_and_durations_come_from_values(
    helm_path: Path, shipped_rules: dict[str, Any]
) -> None:
    alerts = alerts_of(
        rendered_rules(
            helm_path,
            {
                "monitoring": {
                    "collectorJob": "collectors",
                    "prometheusRule": {
                        "spoolNearlyFull": {"ratio": 0.5, "for": "2s"},
                        "destinationFailing": {"seconds": 3, "for": "0s"},
                        "runbookBaseURL": "https://runbooks.example/auditlock",
                    },
                },
            },
        )
    )
    spool = alerts["AuditlockSpoolNearlyFull"]
    assert spool["expr"] == "auditlock_sidecar_spool_fill_ratio > 0.5"
    assert spool["for"] == "2s"
    assert alerts["AuditlockDestinationFailing"]["expr"].endswith("> 3")
    assert alerts["AuditlockCollectorDown"]["expr"] == 'up{job="collectors"} == 0'
    assert (
        spool["annotations"]["runbook_url"]
        == "https://runbooks.example/auditlock#auditlockspoolnearlyfull"
    )
    defaults = alerts_of(shipped_rules)
    assert "runbook_url" not in defaults["AuditlockSpoolNearlyFull"]["annotations"]


def test_bad_rule_values_are_refused_by_the_schema(helm_path: Path) -> None:
    from tests.integration.chart_helpers import HelmError

    with pytest.raises(HelmError, match="ratio"):
        rendered_rules(
            helm_path, {"monitoring": {"prometheusRule": {"spoolNearlyFull": {"ratio": 80}}}}
        )
    with pytest.raises(HelmError, match="for"):
        rendered_rules(
            helm_path, {"monitoring": {"prometheusRule": {"collectorDown": {"for": "five"}}}}
        )


# -- the dashboard against the real metrics ---------------------------------------------

_NAME = re.compile(r"\bauditlock_[a-z_]+\b")
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def series_names(exposition: str) -> set[str]:
    """Every series name a Prometheus scraping this text can store, including those of
    metric families that have no sample yet (labelled counters before their first use)."""
    names = set()
    for family, kind in _TYPE.findall(exposition):
        base = family.removesuffix("_total") if kind == "counter" else family
        names.add(base)
        names.update(base + suffix for suffix in _SUFFIXES.get(kind, ()))
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def test_dashboard_queries_only_metrics_the_collector_and_operator_serve(
    all_on: list[dict[str, Any]],
    shipped_rules: dict[str, Any],
    tmp_path: Path,
    running_operator: RunningOperator,
) -> None:
    import ssl
    import urllib.request

    dashboard = json.loads(dashboard_object(all_on)["data"]["auditlock-pipeline.json"])
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]

    # With a rules file (empty), the collector serves its alerting metrics too.
    rules_file = tmp_path / "alerts.json"
    rules_file.write_text(json.dumps({"rules": []}))
    config = make_config(tmp_path, ports=True, alerts={"rules_file": str(rules_file)})
    with sidecar_process(tmp_path, config) as collector:
        collector.start()
        served = series_names(collector.metrics())
    context = ssl.create_default_context(cafile=str(running_operator.kube.ca_path))
    with urllib.request.urlopen(f"{running_operator.webhook_url}/metrics", context=context) as r:
        served |= series_names(r.read().decode())

    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 20
    used = set()
    for title, expr in exprs:
        names = set(_NAME.findall(expr))
        assert names or "up{" in expr, f"panel {title!r} queries no auditlock metric: {expr}"
        unknown = names - served
        assert not unknown, f"panel {title!r} uses metrics nothing serves: {unknown}"
        used |= names
    # The rules use the same metrics.
    for rule in alerts_of(shipped_rules).values():
        unknown = set(_NAME.findall(rule["expr"])) - served
        assert not unknown, f"alert {rule['alert']} uses metrics nothing serves: {unknown}"
    # Panels show the pipeline's main figures.
    for essential in (
        "auditlock_sidecar_events_received_total",
        "auditlock_sidecar_spool_fill_ratio",
        "auditlock_sidecar_destination_failing_seconds",
        "auditlock_operator_capture_pushback_total",
        "auditlock_operator_policy_pods",
        "auditlock_sidecar_alert_delivery_failures_total",
        "auditlock_operator_alert_delivery_failures_total",
    ):
        assert essential in used, essential


def test_dashboard_layout_is_sound_and_every_query_parses_in_a_real_prometheus(
    all_on: list[dict[str, Any]], prometheus: Prometheus
) -> None:
    import urllib.error

    dashboard = json.loads(dashboard_object(all_on)["data"]["auditlock-pipeline.json"])
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    boxes = []
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for x, y, w, h, title in boxes:  # no two panels on the same grid cells
            overlap = (grid["x"] < x + w and x < grid["x"] + grid["w"]
                       and grid["y"] < y + h and y < grid["y"] + grid["h"])  # fmt: skip
            assert not overlap, f"{panel['title']!r} overlaps {title!r}"
        boxes.append((grid["x"], grid["y"], grid["w"], grid["h"], panel["title"]))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert variables["collector_job"]["query"] == chart_values["monitoring"]["collectorJob"]

    substitutions = {
        "$__rate_interval": "1m",
        "$namespace": ".*",
        "$collector_job": variables["collector_job"]["query"],
    }
    for title, expr in dashboard_exprs(dashboard):
        query = expr
        for variable, value in substitutions.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"panel {title!r}: unknown variable in {expr}"
        try:
            prometheus.query(query)
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            pytest.fail(f"panel {title!r}: Prometheus refuses {query!r}: {body}")


# -- a real Prometheus scraping a real collector ------------------------------------------


def post_event(port: int, n: int, pad: int) -> int:
    return post_bytes(port, json.dumps(padded(n, pad)).encode())[0]


def test_real_prometheus_fires_the_spool_rule_when_the_destination_is_down(
    helm_path: Path,
    tmp_path: Path,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
) -> None:
    """The chart's own rules, with short `for:` from values, evaluated by Prometheus on
    what it scrapes from a collector whose destination (a file:// store on a tmpfs) is
    full: the spool fills, AuditlockSpoolNearlyFull and AuditlockDestinationFailing fire
    and reach Alertmanager; when the destination has room again both resolve."""
    rules = rendered_rules(
        helm_path,
        {
            "monitoring": {
                "prometheusRule": {
                    "spoolNearlyFull": {"for": "2s"},
                    "destinationFailing": {"seconds": 2, "for": "0s"},
                }
            }
        },
    )
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
    pod = f"api-{uuid.uuid4().hex[:8]}"
    config = make_config(
        tmp_path,
        f"file://{tmp_path}/store/trail",
        ports=True,
        spool={"max_bytes": 1024 * 1024, "segment_bytes": 256 * 1024},
        delivery={"retry_initial_seconds": 0.1, "retry_max_seconds": 0.5},
    )
    prometheus.alertmanager_url = alertmanager.url
    try:
        with (
            small_tmpfs(tmp_path / "store", 4 * 1024 * 1024) as store,
            sidecar_process(tmp_path, config) as collector,
            prometheus.scraping(
                [f"127.0.0.1:{config['health']['port']}"],
                [rules_file],
                labels={"namespace": "shop", "pod": pod},
            ) as job,
        ):
            collector.start()
            assert post_event(collector.http_port, 0, 100) == 202
            wait_for(lambda: collector.metric("auditlock_sidecar_events_shipped_total") >= 1, 15,
                     "the first event stored")  # fmt: skip
            assert collector.metric("auditlock_sidecar_destination_failing_seconds") == 0

            fill(store, leave=0)  # the destination is down: every upload fails
            for n in (1, 2):
                assert post_event(collector.http_port, n, 450_000) == 202
            assert collector.metric("auditlock_sidecar_spool_fill_ratio") > 0.8
            wait_for(
                lambda: collector.metric("auditlock_sidecar_destination_failing_seconds") > 0,
                15,
                "uploads to fail",
            )

            prometheus.wait_for_target_up(job)
            firing = prometheus.wait_for_alert("AuditlockSpoolNearlyFull", job=job)
            assert (
                firing["labels"] | {"severity": "warning", "namespace": "shop", "pod": pod}
                == firing["labels"]
            )
            summary = firing["annotations"]["summary"]
            assert re.fullmatch(rf"Collector spool of shop/{pod} is [89]\d(\.\d+)?% full", summary)
            prometheus.wait_for_alert("AuditlockDestinationFailing", job=job)
            routed = alertmanager.receiver.wait_for_alert(
                alertname="AuditlockSpoolNearlyFull", pod=pod
            )
            assert routed["labels"]["severity"] == "warning"

            unfill(store)  # room again: shipping resumes and frees the spool
            wait_for(
                lambda: (
                    collector.metric("auditlock_sidecar_spool_fill_ratio") < 0.8
                    and collector.metric("auditlock_sidecar_destination_failing_seconds") == 0
                ),
                30,
                "the spool to drain",
            )
            wait_for(lambda: not prometheus.alerts(job=job), 30, "both alerts to resolve")
            alertmanager.receiver.wait_for_alert(
                status="resolved", alertname="AuditlockSpoolNearlyFull", pod=pod
            )
            assert collector.terminate() == 0, collector.tail()
    finally:
        prometheus.alertmanager_url = None
        prometheus.reload()
