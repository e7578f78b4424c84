"""The collector runs the way the admitted pod spec says, and its ledger verifies with the
key the operator published.

The rig has no kubelet, so this test plays kubelet for one container: it takes the
collector container from the pod the API server stored (after the injection webhook),
resolves its environment (downward API values, `$(VAR)` expansion), materializes its
volumes (the key Secret, the ConfigMap, the spool) in a temporary directory, runs its
command, waits for its readiness probe, sends events with fluent-logger, and verifies
the result with the public key the operator put beside the data.
"""

from __future__ import annotations

import base64
import re
import signal
from pathlib import Path
from typing import Any

from fluent import sender
from kubernetes import client

from auditlock import sinks
from auditlock.ledger import load_public_key
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.operator import names as n
from tests.e2e.podrun import answers_ok
from tests.helpers.policies import create_pod, create_ready_policy, file_spec, wait_for
from tests.servers.auditlock_child import auditlock_child
from tests.servers.auditlock_operator import RunningOperator
from tests.servers.kube_controlplane import free_port


def _resolve_env(
    container: dict[str, Any], pod: dict[str, Any], secrets: dict[str, Any]
) -> dict[str, str]:
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": "node-a",
    }
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            # Kubernetes expands $(NAME) from variables defined earlier in the list.
            env[var["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"]
            )
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
    return env


def test_injected_collector_runs_and_its_ledger_verifies(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    trail = tmp_path / "trail"
    # The shared key's volume, materialized below; tests/e2e/test_chain.py runs an
    # injected collector of the default (per-pod keys, certified by the operator).
    spec = file_spec(trail, delivery={"maxDelayMs": 100}, signing="shared")
    policy = create_ready_policy(kube, operator_namespace, "e2e", spec)
    fingerprint = policy["status"]["keyFingerprint"]
    pod = create_pod(kube, operator_namespace, {"app": "payments"})
    container = next(
        c
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
        if c["name"] == n.COLLECTOR_CONTAINER
    )
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}

    # Materialize the volumes the way kubelet would.
    root = tmp_path / "pod"
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        key_secret = core.read_namespaced_secret(
            volumes[n.VOLUME_KEY]["secret"]["secretName"], operator_namespace
        )
        config_map = core.read_namespaced_config_map(
            volumes[n.VOLUME_CONFIG]["configMap"]["name"], operator_namespace
        )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    key_dir = root / mounts[n.VOLUME_KEY].lstrip("/")
    key_dir.mkdir(parents=True)
    for name, value in key_secret.data.items():
        (key_dir / name).write_bytes(base64.b64decode(value))
    config_dir = root / mounts[n.VOLUME_CONFIG].lstrip("/")
    config_dir.mkdir(parents=True)
    for name, text in config_map.data.items():
        (config_dir / name).write_text(text)
    spool_dir = root / mounts[n.VOLUME_SPOOL].lstrip("/")
    spool_dir.mkdir(parents=True)

    env = _resolve_env(container, pod, {})
    stream = f"rig_{operator_namespace}_{pod['metadata']['name']}"
    assert env["AUDITLOCK_SIDECAR__STREAM__ID"] == stream
    # Absolute in-container paths and fixed ports, remapped to this machine.
    forward_port, health_port = free_port(), free_port()
    env.update(
        {
            "AUDITLOCK_SIDECAR__STREAM__SIGNING_KEY_FILE": str(key_dir / n.KEY_FILE),
            "AUDITLOCK_SIDECAR__SPOOL__DIR": str(spool_dir),
            "AUDITLOCK_SIDECAR__SOURCES__FORWARD__PORT": str(forward_port),
            "AUDITLOCK_SIDECAR__SOURCES__HTTP__PORT": str(free_port()),
            "AUDITLOCK_SIDECAR__HEALTH__HOST": "127.0.0.1",
            "AUDITLOCK_SIDECAR__HEALTH__PORT": str(health_port),
        }
    )
    command = list(container["command"])
    assert command[0] == "auditlock"
    config_arg = command.index("--config") + 1
    command[config_arg] = str(root / command[config_arg].lstrip("/"))
    with auditlock_child(command[1:], tmp_path / "collector.log", env=env) as proc:
        probe = container["readinessProbe"]["httpGet"]["path"]

        def ready() -> bool:
            return answers_ok(f"http://127.0.0.1:{health_port}{probe}")

        wait_for(f"collector {probe}", ready, timeout=30)
        app = sender.FluentSender("app", host="127.0.0.1", port=forward_port)
        for i in range(5):
            assert app.emit(
                "access", {"action": "login", "actor": f"user-{i}", "target": "orders"}
            ), app.last_error
        app.close()

        def stored() -> bool:
            return any(trail.glob("streams/*/*/seg-*.jsonl*"))

        wait_for("a stored segment", stored, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    destination = sinks.open(f"file://{trail}")
    public_key = load_public_key(destination.get(f"keys/{fingerprint}.pub"))
    report = verify(destination, VerifyOptions(public_keys=[public_key]))
    assert report.ok, report.findings
    assert report.events_verified == 5
    assert [s.stream for s in report.streams] == [stream]
    assert report.streams[0].closed  # SIGTERM wrote the stream-closed checkpoint
