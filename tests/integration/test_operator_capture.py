"""Real API server audit events become ledger events in the operator's collector's store.

The rig's kube-apiserver sends its audit webhook to the operator's /audit intake (on the
rig's reserved audit port); the operator maps the events of namespaces under a policy
and sends them with fluent-logger to its collector: a real `auditlock sidecar` process,
configured by the operator's own renderer, storing a signed ledger on file://.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from auditlock.ledger.value_hash import value_hash
from tests.helpers.http_intake import post
from tests.helpers.policies import create_ready_policy, file_spec, wait_for
from tests.helpers.trail import stored_events
from tests.servers.auditlock_child import run_auditlock
from tests.servers.auditlock_operator import RunningOperator, remove_policy, secret_hash_key
from tests.servers.http_upstream import UpstreamProcess
from tests.servers.sidecar import access_proxy_config, sidecar_process


def test_watch_fallback_records_config_changes_with_hashes_only(
    running_operator: RunningOperator,
    operator_namespace: str,
    operator_collector: Path,
    tmp_path: Path,
) -> None:
    kube = running_operator.kube
    spec = file_spec(
        tmp_path / "app-trail",
        sources={"cluster": {"auditWebhook": False, "watch": True}},
    )
    create_ready_policy(kube, operator_namespace, "watched", spec)
    # The registry follows the AuditPolicy watch; give the capture a moment to see it.
    time.sleep(0.5)
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map(
            operator_namespace, {"metadata": {"name": "app-settings"}, "data": {"mode": "fast"}}
        )
        core.patch_namespaced_config_map(
            "app-settings", operator_namespace, {"data": {"mode": "safe"}}
        )
        core.create_namespaced_secret(
            operator_namespace, {"metadata": {"name": "api-key"}, "stringData": {"key": "hunter2"}}
        )

    def captured() -> list[dict[str, Any]] | None:
        events = [
            e
            for e in stored_events(operator_collector)
            if e.get("target", {}).get("namespace") == operator_namespace
            and e.get("details", {}).get("observed_by") == "watch"
        ]
        actions = {(e["target"]["resource"], e["target"].get("name"), e["action"]) for e in events}
        wanted = {
            ("configmaps", "app-settings", "create"),
            ("configmaps", "app-settings", "update"),
            ("secrets", "api-key", "create"),
        }
        return events if wanted <= actions else None

    events = wait_for("watched changes in the operator's ledger", captured, 30)
    update = next(e for e in events if e["action"] == "update")
    assert update["category"] == "configuration"
    assert set(update["details"]["keys_sha256"]) == {"mode"}
    # The policy's own key Secret is captured too; pick the one this test wrote.
    secret = next(
        e
        for e in events
        if e["target"]["resource"] == "secrets" and e["target"].get("name") == "api-key"
    )
    key = secret_hash_key(kube)
    assert secret["details"]["secret"]["keys"] == {"key": value_hash(b"hunter2", key)}
    stored = b"".join(p.read_bytes() for p in operator_collector.rglob("*") if p.is_file())
    for form in (b"hunter2", b"aHVudGVyMg", value_hash(b"hunter2").encode(),
                 value_hash(b"aHVudGVyMg==").encode()):  # fmt: skip
        assert form not in stored, form


# The captured events beside an app's: `auditlock trace` on real data (issue 16 point 3).
# One request id, sent by an app with its event (HTTP intake of a real collector
# process), as `x-request-id` through that collector's access proxy to a real upstream,
# and as `Audit-ID` to the real kube-apiserver (captured into the operator's collector),
# is found in both trails, from all three observers, in time order.


def _review_cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_auditlock(*args, env={"AUDITLOCK_CACHE_DIR": str(cache)})


def test_one_request_id_is_traced_across_app_proxy_and_api_server(
    running_operator: RunningOperator,
    operator_namespace: str,
    operator_collector: Path,
    tmp_path: Path,
) -> None:
    kube = running_operator.kube
    create_ready_policy(kube, operator_namespace, "traced", file_spec(tmp_path / "policy-trail"))
    request = f"req-{uuid.uuid4().hex[:16]}"
    app_dir = tmp_path / "app"
    try:
        with UpstreamProcess(tmp_path) as upstream:
            config, proxy_port = access_proxy_config(app_dir, upstream.url)
            with sidecar_process(app_dir, config) as sidecar:
                sidecar.start(timeout=60)
                # 1. the app's own event, carrying the request id
                event = {
                    "category": "data", "action": "order.refund", "outcome": "success",
                    "actor": {"kind": "user", "name": "alice"},
                    "target": {"resource": "orders", "name": "order-42"},
                    "request_id": request,
                }  # fmt: skip
                status, answer = post(sidecar.http_port, event)
                assert status == 202, answer
                # 2. the same request through the access proxy
                proxied = urllib.request.Request(
                    f"http://127.0.0.1:{proxy_port}/blob/64", headers={"X-Request-Id": request}
                )
                with urllib.request.urlopen(proxied, timeout=10) as answer:
                    assert answer.status == 200
                # 3. the service's call to the Kubernetes API, with the id as its audit id
                with kube.api_client() as api:
                    api.set_default_header("Audit-ID", request)
                    client.CoreV1Api(api).create_namespaced_secret(
                        operator_namespace,
                        {"metadata": {"name": "refund-key"}, "stringData": {"k": "v"}},
                    )
                assert sidecar.terminate(timeout=60) == 0  # sealed and closed
    finally:
        remove_policy(kube, operator_namespace, "traced")

    wait_for(
        "the API server's event in the operator's ledger",
        lambda: any(e["id"] == f"k8s-audit-{request}" for e in stored_events(operator_collector)),
        90,
    )
    cache = tmp_path / "cache"
    trails = [f"file://{operator_collector}", f"file://{app_dir}/store"]
    keys = ["--public-key", str(tmp_path / "ed25519.pub.pem"),
            "--public-key", str(app_dir / "key.pub.pem")]  # fmt: skip

    def traced() -> dict[str, Any] | None:
        # The operator's collector seals on its own clock: retry until a checkpoint
        # covers the API server's event (until then it is excluded as unsigned).
        done = _review_cli(cache, "trace", request, *trails, *keys, "--no-cache", "--json")
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc if len(doc["events"]) >= 3 else None

    doc = wait_for("three events sharing the request id", traced, 60)
    assert doc["result"] == "PASS", doc["trails"]
    events = doc["events"]
    assert {(e["observer"], e["matched_by"]) for e in events} == {
        ("app", "request_id"),
        ("access-proxy", "request_id"),
        ("api-server", "audit_id"),
    }
    assert [e["time_ns"] for e in events] == sorted(e["time_ns"] for e in events)
    api_event = next(e for e in events if e["observer"] == "api-server")
    assert (api_event["target_resource"], api_event["target_name"]) == ("secrets", "refund-key")
    assert {e["trail"] for e in events} == set(trails)
    # The text form names every observer, one row each.
    table = _review_cli(cache, "trace", request, *trails, *keys)
    assert table.returncode == 0, table.stderr
    assert f"(3 events share {request})" in table.stdout
