"""A pod whose collector was killed and which was deleted without a grace period does not
leave its stream condemned to `stream-stale` forever: the operator closes it with an
`abandon` checkpoint once the pod has been gone for the grace delay, and `auditlock
verify` (a real process) reports it closed-abandoned and PASS, a year later too. A
tampered copy still fails. While the collector is still writing (a force-deleted pod
whose container has not stopped yet), nothing is closed.

Real processes throughout: the rig's kube-apiserver, the operator (kopf + webhooks),
the collector started from the admitted pod spec by tests/e2e/podrun.py (the kubelet's
part), SeaweedFS as the S3 destination with Object Lock in COMPLIANCE mode (the tampered
variants are file:// copies of the trail, since the locked originals cannot be deleted).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from fluent import sender
from kubernetes import client

from auditlock import sinks
from auditlock.ledger.keys import load_public_key
from auditlock.ledger.newest import StreamTip, newest_checkpoint
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.operator import names as n
from tests.e2e.podrun import ContainerRun, answers_ok, bind_to_node
from tests.helpers.certificates import collector_running
from tests.helpers.cli import cli
from tests.helpers.policies import (
    create_pod,
    create_ready_policy,
    create_s3_secret,
    s3_spec,
    wait_for,
)
from tests.helpers.trail import wait_abandoned, wait_abandoned_event
from tests.servers.auditlock_child import run_auditlock
from tests.servers.auditlock_operator import label_namespace, start_operator
from tests.servers.kube_controlplane import KubeControlPlane, free_port
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import ledger_events

ROOT = Path(__file__).resolve().parents[2]
GRACE = 3.0
YEAR_NS = 365 * 86400 * 1_000_000_000


def _cli_verify(
    url: str, key: Path, env: dict[str, str] | None = None, *extra: str
) -> tuple[int, dict[str, object]]:
    done = run_auditlock(
        "verify", url, "--public-key", str(key), "--json", *extra, env=env, timeout=60
    )
    return done.returncode, json.loads(done.stdout)


def _copy(store: sinks.Destination, directory: Path, leave_out: str) -> str:
    """A file:// copy of the trail without one object: what an edited export looks like."""
    copy = sinks.open(f"file://{directory}")
    for name in store.list(""):
        if name != leave_out:
            copy.put(name, store.get(name), None)
    return copy.url


def _codes(document: dict[str, object]) -> set[str]:
    findings = document["findings"]
    assert isinstance(findings, list)
    return {f["code"] for f in findings}


def test_a_pod_deleted_without_grace_has_its_stream_closed_as_abandoned(
    auditpolicy_crd: KubeControlPlane,
    kube_namespace: str,
    seaweedfs: SeaweedFS,
    s3_locked_bucket: str,
    tmp_path: Path,
) -> None:
    kube = auditpolicy_crd
    operator = start_operator(
        kube, audit_intake=False, refresh_seconds=1.0, abandon_grace_seconds=GRACE
    )
    run: ContainerRun | None = None
    try:
        namespace = label_namespace(kube, kube_namespace)
        forward_port = free_port()
        create_s3_secret(kube, namespace, seaweedfs)
        spec = s3_spec(
            seaweedfs,
            s3_locked_bucket,
            delivery={"maxDelayMs": 100},
            sources={"forward": {"port": forward_port}, "http": {"port": free_port()}},
        )
        url = f"s3://{s3_locked_bucket}/trail"
        policy = create_ready_policy(kube, namespace, "gone", spec)
        key_path = tmp_path / "policy.pub.pem"  # per-pod keys: the operator's root
        key_path.write_text(policy["status"]["publicKey"])
        pod_name = create_pod(kube, namespace, {"app": "payments"})["metadata"]["name"]
        pod = bind_to_node(kube, namespace, pod_name, "rig-node-1")
        run = ContainerRun(
            kube=kube, pod=pod, container_name=n.COLLECTOR_CONTAINER, workdir=tmp_path / "pod",
            extra_path=[str(Path(sys.executable).parent)],
            image_paths=sorted({ROOT, Path(sys.prefix), Path(sys.base_prefix)}),
        )  # fmt: skip
        run.prepare()
        stream = run.env["AUDITLOCK_SIDECAR__STREAM__ID"]
        assert stream == f"rig_{namespace}_{pod_name}"
        # The default per-pod key is certified only for a collector the kubelet reports
        # running (the rig has none): report it, as tests/e2e/chain.py does.
        collector_running(kube, pod)
        health_port = free_port()
        # The host's network is shared with other tests: the health port is remapped; a
        # one-second heartbeat makes "the collector is still writing" visible quickly.
        run.start({"AUDITLOCK_SIDECAR__HEALTH__PORT": str(health_port),
                   "AUDITLOCK_SIDECAR__DELIVERY__HEARTBEAT_SECONDS": "1"})  # fmt: skip

        def ready() -> bool:
            assert run is not None and run.proc is not None
            assert run.proc.poll() is None, run.log_tail()
            return answers_ok(f"http://127.0.0.1:{health_port}/readyz")

        wait_for("the collector ready", ready, timeout=30)
        store = sinks.open(url, **seaweedfs.destination_options())
        app = sender.FluentSender("app", host="127.0.0.1", port=forward_port)
        sent: list[str] = []

        def send(count: int) -> None:
            for _ in range(count):
                event_id = f"ev-{len(sent):04d}"
                assert app.emit(
                    "access",
                    {"id": event_id, "action": "login", "actor": "alice", "target": "orders"},
                ), app.last_error
                sent.append(event_id)

        def covered() -> StreamTip | None:
            tip = newest_checkpoint(store, stream)
            if tip is None or tip.signed is None:
                return None
            return tip if tip.signed.checkpoint.tree_size == len(sent) else None

        send(5)
        wait_for("a checkpoint covering 5 events", covered, timeout=30)

        # A force delete: the pod object is gone at once, the container is not (yet).
        with kube.api_client() as api:
            client.CoreV1Api(api).delete_namespaced_pod(pod_name, namespace, grace_period_seconds=0)
        deleted = time.time_ns()
        # The collector goes on storing for more than twice the grace delay: its fresh
        # checkpoints keep restarting the operator's wait, so its stream is not closed.
        until = time.monotonic() + 2.5 * GRACE
        while time.monotonic() < until:
            send(1)
            time.sleep(0.5)
            tip = newest_checkpoint(store, stream)
            assert tip is not None and tip.signed is not None
            assert tip.signed.checkpoint.kind != "abandon", "closed while its writer wrote"
        last = wait_for(f"a checkpoint covering {len(sent)} events", covered, timeout=30)

        assert run.proc is not None
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(10)
        killed = time.time_ns()
        late = newest_checkpoint(store, stream)
        assert late is not None and late.signed is not None
        # What verify said before this change, and would say for the whole retention.
        stale = verify(store, VerifyOptions(public_keys=[load_public_key(key_path)],
                                            now_ns=killed + YEAR_NS))  # fmt: skip
        assert {f.code for f in stale.findings} == {"stream-stale"}, stale.summary()

        tip = wait_abandoned(store, stream)
        assert tip.signed is not None
        cp = tip.signed.checkpoint
        assert (cp.index, cp.prev, cp.tree_size) == (
            late.index + 1,
            late.signed.digest,
            len(sent),
        )
        # The operator waited the whole grace delay after the writer's last sign of life.
        assert cp.time_ns - late.signed.checkpoint.time_ns >= GRACE * 1e9
        assert cp.time_ns > killed > deleted
        assert last is not None

        code, document = _cli_verify(url, key_path, seaweedfs.env(), "--require-retention", "1")
        assert code == 0, document
        assert document["result"] == "PASS"
        assert document["stream_counts"] == {"closed": 0, "closed-abandoned": 1, "open": 0}
        streams = document["streams"]
        assert isinstance(streams, list) and streams[0]["state"] == "closed-abandoned"
        # Every event the collector stored before it died is there, once.
        ids = [e["event"]["id"] for e in ledger_events(store)]
        assert ids == sent
        # Not condemned a year later either.
        later = verify(store, VerifyOptions(public_keys=[load_public_key(key_path)],
                                            now_ns=killed + YEAR_NS))  # fmt: skip
        assert later.ok, later.summary()

        # The operator said so on the policy.
        wait_abandoned_event(kube, namespace, stream)

        # Tampered copies: the checkpoint the record names left out; the record left out.
        # (In this process: the verify child above already showed the command's own run.)
        code, out, _ = cli("verify", _copy(store, tmp_path / "named-gone", late.name),
                           "--public-key", str(key_path), "--json")  # fmt: skip
        document = json.loads(out)
        assert code == 1 and "checkpoint-missing" in _codes(document), document
        # Without the record the stream is open again, and stale once its heartbeat is
        # overdue (judged a year on: the collector died seconds ago).
        copy = sinks.open(_copy(store, tmp_path / "record-gone", tip.name))
        reopened = verify(copy, VerifyOptions(public_keys=[load_public_key(key_path)],
                                              now_ns=killed + YEAR_NS))  # fmt: skip
        assert {f.code for f in reopened.findings} == {"stream-stale"}, reopened.summary()
        assert reopened.to_json()["stream_counts"] == {
            "closed": 0,
            "closed-abandoned": 0,
            "open": 1,
        }
    finally:
        if run is not None:
            run.stop(timeout=5)
        operator.stop()
