"""The API server's audit path keeps the collector's promise (docs/operator.md,
"Cluster-level capture"): the /audit webhook answers 200 only once the batch is fsynced
in the operator's collector's spool; a full spool is answered 503 so the API server
keeps the batch; killed processes lose nothing that was acknowledged.

Real processes throughout: the rig's kube-apiserver with its batching audit webhook,
`auditlock operator run` and `auditlock sidecar` as child processes (SIGKILLed), a
file:// trail checked with `auditlock verify`. Requests carry their own `Audit-ID`
header, so every request is matched to its ledger event `k8s-audit-<id>`. What the API
server did not get a 200 for, it says in its log ("Impacted events: ... AUDIT: id=");
every other request is acknowledged and must be in the trail exactly once.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from auditlock.ledger.keys import generate, private_pem
from tests.helpers.policies import create_ready_policy, file_spec
from tests.servers.auditlock_operator import remove_policy
from tests.servers.disk_faults import fill, small_tmpfs, unfill
from tests.servers.kube_controlplane import KubeControlPlane, free_port
from tests.servers.sidecar import (
    SidecarProcess,
    cli_verify,
    ledger_events,
    make_config,
    open_store,
    verify_ledger,
)

ROOT = Path(__file__).resolve().parents[2]
IMPACTED = re.compile(r'AUDIT: id="([^"]+)" stage="(\w+)"')


class OperatorProcess:
    """`auditlock operator run` on fixed ports (the audit intake on the rig's audit
    port), restartable after SIGKILL."""

    def __init__(
        self, kube: KubeControlPlane, collector_port: int, workdir: Path, retry_after: int = 1
    ) -> None:
        pair = kube.issue_serving_cert("operator-durable")
        self.health_port = free_port()
        root_key = workdir / "root.pem"  # as the chart mounts its root key Secret
        root_key.write_bytes(private_pem(generate()))
        self.argv = [
            sys.executable, "-m", "auditlock", "operator", "run",
            f"--kubeconfig={kube.kubeconfig}", "--webhook-host=127.0.0.1",
            f"--webhook-port={free_port()}", f"--audit-port={kube.audit_port}",
            f"--tls-cert-file={pair.cert_path}", f"--tls-key-file={pair.key_path}",
            f"--health-port={self.health_port}", "--standalone", "--cluster-name=rig",
            f"--collector=127.0.0.1:{collector_port}", "--refresh-seconds=5",
            "--abandon-grace-seconds=0", f"--root-key-file={root_key}",
            f"--audit-retry-after-seconds={retry_after}",
        ]  # fmt: skip
        self.log_path = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
            if self._get("/readyz") == 200:
                return
            time.sleep(0.1)
        raise AssertionError("operator not ready")

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=2
            ) as answer:
                return int(answer.status)
        except OSError:
            return 0

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class Traffic:
    """A thread reading a Secret through the API, each request with its own Audit-ID."""

    def __init__(self, kube: KubeControlPlane, namespace: str, per_second: float = 25) -> None:
        self.url = f"{kube.url}/api/v1/namespaces/{namespace}/secrets/db"
        self.token = kube.admin_token
        self.context = ssl.create_default_context(cafile=str(kube.ca_path))
        self.interval = 1.0 / per_second
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-traffic", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            audit_id = str(uuid.uuid4())
            request = urllib.request.Request(
                self.url,
                headers={"Authorization": f"Bearer {self.token}", "Audit-ID": audit_id},
            )
            try:
                with urllib.request.urlopen(request, timeout=10, context=self.context) as r:
                    assert r.headers.get("Audit-Id") == audit_id
                    r.read()
            except urllib.error.URLError:
                continue  # the API server was busy: no request, no audit event
            self.sent.append(audit_id)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


@contextmanager
def scene(
    kube: KubeControlPlane, tmp_path: Path, retry_after: int = 1, **collector: Any
) -> Iterator[Any]:
    """A namespace under a policy with auditWebhook on, a collector process (its
    trail in `<tmp>/trail`), and the operator process handing batches to it, answering
    a batch it could not store with `Retry-After: <retry_after>`."""
    namespace = kube.create_namespace()
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_secret(
            namespace, {"metadata": {"name": "db"}, "stringData": {"password": "s3cr3t"}}
        )
    workdir = tmp_path / "collector"
    config = make_config(
        workdir,
        f"file://{tmp_path / 'trail'}",
        ports=True,
        stream={"id": "auditlock-system_operator"},
        # As the chart configures the operator's collector: its capture's tags are trusted.
        sources={"forward": {"observer_tag_prefix": "auditlock.operator"}},
        source={"cluster": "rig", "namespace": "auditlock-system", "pod": "operator"},
        delivery={"max_delay_seconds": 0.2, "retry_max_seconds": 1.0},
        **collector,
    )
    sidecar = SidecarProcess(workdir, config)
    sidecar.start()
    operator = OperatorProcess(kube, sidecar.http_port, tmp_path, retry_after)
    try:
        operator.start()
        create_ready_policy(
            kube, namespace, "capture", file_spec(tmp_path / "app-trail"), timeout=30
        )
        time.sleep(1.0)  # the operator's registry follows the policy watch
        yield namespace, sidecar, operator
    finally:
        operator.kill()
        sidecar.kill()
        # No operator is left to run the finalizer: drop it at once, not after a wait.
        remove_policy(kube, namespace, "capture", timeout=0)


def apiserver_log_offset(kube: KubeControlPlane) -> int:
    path = kube.log_paths["kube-apiserver"]
    return path.stat().st_size if path.exists() else 0


def dropped_by_apiserver(kube: KubeControlPlane, offset: int) -> set[str]:
    """Audit IDs (stage ResponseComplete) the API server reported it could not deliver."""
    with kube.log_paths["kube-apiserver"].open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    return {m[1] for m in IMPACTED.finditer(text) if m[2] == "ResponseComplete"}


def wait_settled(
    kube: KubeControlPlane, store: Any, sent: list[str], offset: int, timeout: float = 30.0
) -> None:
    """Until every request is either in the trail or given up by the API server: then no
    batch is in flight or waiting for a resend. A request that is neither after `timeout`
    is left to the caller's assertions (an acknowledged event lost)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = {line["event"]["id"].removeprefix("k8s-audit-") for line in ledger_events(store)}
        if set(sent) <= stored | dropped_by_apiserver(kube, offset):
            return
        time.sleep(0.5)


def settle_and_read(
    kube: KubeControlPlane, sidecar: SidecarProcess, sent: list[str], offset: int, trail: Path
) -> tuple[set[str], set[str], collections.Counter[str]]:
    """Wait for the API server's batches (and their retries) to finish, stop the collector
    cleanly (it ships what it spooled), verify the trail and count each request in it."""
    store = open_store(f"file://{trail}")
    wait_settled(kube, store, sent, offset)
    assert sidecar.terminate(timeout=60) == 0, sidecar.tail()
    verify_ledger(store, sidecar.workdir / "key.pub.pem")
    result = cli_verify(f"file://{trail}", sidecar.workdir / "key.pub.pem")
    assert result is None or result.returncode == 0, (result.stdout, result.stderr)
    stored = collections.Counter(
        line["event"]["id"].removeprefix("k8s-audit-")
        for line in ledger_events(store)
        if line["event"]["id"].startswith("k8s-audit-")
    )
    dropped = dropped_by_apiserver(kube, offset) & set(sent)
    acknowledged = set(sent) - dropped
    print(f"requests {len(sent)}, acknowledged {len(acknowledged)}, dropped {len(dropped)}")
    return acknowledged, dropped, stored


def test_sigkill_of_operator_and_collector_loses_no_acknowledged_audit_event(
    auditpolicy_crd: KubeControlPlane, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    with scene(kube, tmp_path) as (namespace, sidecar, operator):
        offset = apiserver_log_offset(kube)
        with Traffic(kube, namespace) as traffic:
            time.sleep(2.0)
            sidecar.kill()  # SIGKILL: the operator can no longer store anything
            deadline = time.monotonic() + 15
            while "collector_unreachable" not in pushbacks(operator.metrics()):
                assert time.monotonic() < deadline, "no pushback counted with the collector down"
                time.sleep(0.2)
            time.sleep(1.0)
            operator.kill()  # SIGKILL: whatever the operator held in memory is gone
            time.sleep(0.5)
            sidecar.start()
            operator.start()
            time.sleep(2.0)
            operator.kill()  # SIGKILL again, with batches in flight to a live collector
            operator.start()
            time.sleep(2.0)
        acknowledged, dropped, stored = settle_and_read(
            kube, sidecar, traffic.sent, offset, tmp_path / "trail"
        )
    assert len(acknowledged) > 50, (len(traffic.sent), len(dropped))
    missing = sorted(a for a in acknowledged if stored[a] == 0)
    assert missing == [], f"{len(missing)} acknowledged audit events not in the trail"
    twice = sorted(a for a in traffic.sent if stored[a] > 1)
    assert twice == [], f"{len(twice)} audit events stored more than once"


def test_full_spool_is_answered_503_and_counted_and_nothing_refused_is_stored(
    auditpolicy_crd: KubeControlPlane, tmp_path: Path
) -> None:
    kube = auditpolicy_crd
    trail = tmp_path / "trail"
    with (
        small_tmpfs(trail, 4 * 1024 * 1024),
        # Retry-After: 0, so the API server gives up on a refused batch after its
        # client's 10 immediate resends, not after about 55 s of them one second apart
        # (the default; docs/operator.md, "Cluster-level capture").
        scene(kube, tmp_path, retry_after=0, spool={"max_bytes": 64 * 1024}) as (
            namespace,
            sidecar,
            operator,
        ),
    ):
        offset = apiserver_log_offset(kube)
        fill(trail, 0)  # the trail's disk is full: shipping stops, the spool fills up
        with Traffic(kube, namespace, per_second=5) as traffic:
            deadline = time.monotonic() + 60
            while "spool_full" not in pushbacks(operator.metrics()):
                assert time.monotonic() < deadline, operator.metrics()
                time.sleep(0.5)
            # Keep the disk full until the API server has given up on a batch it was
            # answered 503 for.
            full_since = time.monotonic()
            while not dropped_by_apiserver(kube, offset):
                assert time.monotonic() < full_since + 240, "the API server never gave up"
                time.sleep(1.0)
            print(f"first batch given up {time.monotonic() - full_since:.0f} s after the "
                  "first 503")  # fmt: skip
            unfill(trail)  # room again: shipping drains the spool, batches are stored
            time.sleep(3.0)
        counted = pushbacks(operator.metrics())
        acknowledged, dropped, stored = settle_and_read(kube, sidecar, traffic.sent, offset, trail)
        apiserver_log = kube.log_paths["kube-apiserver"].read_text(errors="replace")
    # What the API server was told: 503 (client-go's words for it), counted by reason.
    assert counted["spool_full"] >= 1
    assert "the server is currently unable to handle the request" in apiserver_log[offset:]
    assert dropped
    assert len(acknowledged) > 20
    missing = sorted(a for a in acknowledged if stored[a] == 0)
    assert missing == [], f"{len(missing)} acknowledged audit events not in the trail"
    assert sorted(a for a in traffic.sent if stored[a] > 1) == []
    # Refused batches never reached the spool: none of them is in the trail.
    assert sorted(a for a in dropped if stored[a]) == []


def pushbacks(metrics: str) -> dict[str, float]:
    pattern = r'auditlock_operator_capture_pushback_total\{reason="(\w+)"\} (\S+)'
    found = re.findall(pattern, metrics)
    return {reason: float(value) for reason, value in found if float(value) > 0}
