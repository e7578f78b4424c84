"""Two clusters, one bucket prefix: the same namespace and pod names never write the same
stream, because the stream id names the cluster (docs/FORMAT.md, "Stream ids").

Two real kube-apiservers (the session's rig and a second one started here), one operator
each deriving its cluster name from its own kube-system namespace's UID, one AuditPolicy
each with the same name in a namespace of the same name, both writing to one file://
prefix; in each cluster a pod `db-0` whose injected collector is run as admitted
(tests/e2e/podrun.py plays the kubelet). `verify` with both policies' keys: PASS, two
streams, each with its own events.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fluent import sender
from kubernetes import client

from auditlock import sinks
from auditlock.ledger import load_public_key
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.operator import names as n
from auditlock.operator.stream_ids import derived_cluster_name
from tests.e2e.podrun import ContainerRun, answers_ok, bind_to_node
from tests.helpers.certificates import collector_running
from tests.helpers.policies import create_ready_policy, file_spec, get_policy, wait_for
from tests.servers.auditlock_operator import apply_crd, label_namespace, start_operator
from tests.servers.kube import start_plane
from tests.servers.kube_controlplane import KubeControlPlane, free_port

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 5


@pytest.fixture(scope="module")
def second_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    plane = start_plane(tmp_path_factory.mktemp("kube-b"), "second control plane")
    try:
        apply_crd(plane)
        yield plane
    finally:
        plane.stop()


def _kube_system_uid(kube: KubeControlPlane) -> str:
    with kube.api_client() as api:
        return str(client.CoreV1Api(api).read_namespace("kube-system").metadata.uid)


def _create_pod(kube: KubeControlPlane, namespace: str, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "payments"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/db:1"}]},
    }
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    return bind_to_node(kube, namespace, name, "node-1")


def _run_collector(
    kube: KubeControlPlane,
    pod: dict[str, Any],
    workdir: Path,
    trail: Path,
    forward_port: int,
    actor: str,
) -> str:
    """Run the pod's injected collector, send EVENTS events, stop it cleanly; its stream."""
    run = ContainerRun(
        kube=kube, pod=pod, container_name=n.COLLECTOR_CONTAINER, workdir=workdir,
        extra_path=[str(Path(sys.executable).parent)],
        # The shared trail stays the host's folder under the collector's /tmp emptyDir:
        # it plays the bucket both clusters write.
        image_paths=sorted({ROOT, Path(sys.prefix), Path(sys.base_prefix), trail}),
    )  # fmt: skip
    run.prepare()
    collector_running(kube, pod)  # the kubelet's report; certificates wait for it
    health_port = free_port()
    run.start({"AUDITLOCK_SIDECAR__HEALTH__PORT": str(health_port)})
    try:

        def ready() -> bool:
            assert run.proc is not None and run.proc.poll() is None, run.log_tail()
            return answers_ok(f"http://127.0.0.1:{health_port}/readyz")

        wait_for("the collector ready", ready, timeout=30)
        app = sender.FluentSender("app", host="127.0.0.1", port=forward_port)
        for i in range(EVENTS):
            assert app.emit("access", {"action": "login", "actor": actor, "target": f"row-{i}"}), (
                app.last_error
            )
        app.close()
        stream = run.env["AUDITLOCK_SIDECAR__STREAM__ID"]

        def stored() -> bool:
            return any(trail.glob(f"streams/{stream}/*/seg-*.jsonl*"))

        wait_for(f"a stored segment of {stream}", stored, timeout=30)
    finally:
        code = run.stop()
    assert code == 0, run.log_tail()
    return run.env["AUDITLOCK_SIDECAR__STREAM__ID"]


def test_two_clusters_with_the_same_names_write_distinct_streams_to_one_prefix(
    auditpolicy_crd: KubeControlPlane, second_cluster: KubeControlPlane, tmp_path: Path
) -> None:
    clusters = [auditpolicy_crd, second_cluster]
    names = [derived_cluster_name(_kube_system_uid(kube)) for kube in clusters]
    assert names[0] != names[1]
    trail = tmp_path / "shared-trail"
    trail.mkdir()
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    forward_port = free_port()
    operators = []
    try:
        keys = []
        streams = []
        for i, kube in enumerate(clusters):
            label_namespace(kube, kube.create_namespace(namespace))
            # cluster="": each operator derives its name, and publishes it for the
            # collector beside it as in the chart.
            operators.append(
                start_operator(
                    kube,
                    audit_intake=False,
                    cluster="",
                    identity_config_map=(namespace, "auditlock-cluster"),
                )
            )
            with kube.api_client() as api:
                published = client.CoreV1Api(api).read_namespaced_config_map(
                    "auditlock-cluster", namespace
                )
            assert published.data == {"clusterName": names[i]}
            spec = file_spec(
                trail,
                delivery={"maxDelayMs": 100},
                sources={"forward": {"port": forward_port}, "http": {"port": free_port()}},
            )
            policy = create_ready_policy(kube, namespace, "orders", spec)
            # Per-pod keys: each cluster's root, which certified its collector's key.
            keys.append(load_public_key(policy["status"]["publicKey"].encode()))
            pod = _create_pod(kube, namespace, "db-0")
            streams.append(
                _run_collector(kube, pod, tmp_path / f"pod-{i}", trail, forward_port, f"user-{i}")
            )
        assert streams == [f"{names[0]}_{namespace}_db-0", f"{names[1]}_{namespace}_db-0"]

        report = verify(sinks.open(f"file://{trail}"), VerifyOptions(public_keys=keys))
        assert report.ok, report.findings
        assert sorted(s.stream for s in report.streams) == sorted(streams)
        assert all(s.closed for s in report.streams)
        assert report.events_verified == 2 * EVENTS

        # Each policy's LAST-CHECKPOINT is its own cluster's stream, not the other's.
        for kube in clusters:
            wait_for(
                "lastCheckpoint",
                lambda kube=kube: get_policy(kube, namespace, "orders")["status"].get(
                    "lastCheckpoint"
                ),
                timeout=15,
            )
    finally:
        for operator in operators:
            operator.stop()
        for kube in clusters:
            kube.delete_namespace(namespace)
