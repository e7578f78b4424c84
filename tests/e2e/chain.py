"""The whole auditlock chain, step by step, on real servers on this machine.

policy → operator → injected pod → collector run as injected → app events (Forward and
HTTP), a mounted config file change, a Secret read seen by the API server's audit webhook
→ signed segments and checkpoints in SeaweedFS under COMPLIANCE lock → `auditlock verify`.

Used twice: by tests/e2e/test_chain.py (which asserts on every step) and by the README's
demo command (scripts/demo.py, which narrates them). Each step returns what it saw, so
the test and the demo judge the same facts.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditlock.ledger.keys import generate, private_pem, public_pem
from tests.e2e.podrun import ContainerRun, bind_to_node
from tests.helpers.certificates import collector_running
from tests.servers.auditlock_child import run_auditlock
from tests.servers.auditlock_operator import (
    RunningOperator,
    apply_crd,
    label_namespace,
    start_operator,
)
from tests.servers.kube_controlplane import KubeControlPlane, free_port
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import SidecarProcess, ledger_events, wait_readyz

ROOT = Path(__file__).resolve().parents[2]
POLICY = "orders"
APP_LABELS = {"app": "orders"}
SETTINGS_PATH = "/etc/orders"
COLLECTOR = "auditlock-collector"
Narrate = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class TrailFacts:
    """What is in the bucket for one stream, read back from the server."""

    segments: list[str]
    checkpoints: list[str]
    events: list[dict[str, Any]]
    modes: dict[str, str]  # object name -> S3 Object Lock mode reported by the server


@dataclass
class Chain:
    workdir: Path
    narrate: Narrate = _quiet
    retention_days: int = 1
    kube: KubeControlPlane | None = None
    s3: SeaweedFS | None = None
    bucket: str = ""
    operator: RunningOperator | None = None
    operator_collector: SidecarProcess | None = None
    namespace: str = ""
    pod: dict[str, Any] = field(default_factory=dict)
    collector: ContainerRun | None = None
    forward_port: int = 0
    http_port: int = 0
    sent_ids: list[str] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def pod_prefix(self) -> str:
        return f"s3://{self.bucket}/{POLICY}"

    @property
    def cluster_prefix(self) -> str:
        return f"s3://{self.bucket}/cluster"

    # -- steps --------------------------------------------------------------------------

    def start_servers(self) -> None:
        self.kube = KubeControlPlane(self.workdir / "kube")
        self.kube.start()
        self._stack.callback(self.kube.stop)
        self.narrate(
            f"control plane: kube-apiserver {self.kube.version} + etcd on {self.kube.url} "
            f"(ready in {self.kube.start_seconds:.1f} s)"
        )
        self.s3 = SeaweedFS(self.workdir / "seaweedfs")
        self.s3.start()
        self._stack.callback(self.s3.stop)
        self.bucket = self.s3.make_bucket("auditlock-trail", object_lock=True)
        self.narrate(
            f"object storage: SeaweedFS S3 on {self.s3.endpoint}, bucket {self.bucket} "
            "with Object Lock"
        )

    def start_operator(self) -> None:
        kube, s3 = self._kube(), self._s3()
        apply_crd(kube)
        self.operator = start_operator(kube, refresh_seconds=2.0, watch_fallback=False)
        self._stack.callback(self.operator.stop)
        # The operator's own collector: cluster-level events (API server audit) reach the
        # ledger through the same pipeline as a pod's, posted to its HTTP intake.
        workdir = self.workdir / "operator-collector"
        workdir.mkdir(parents=True, exist_ok=True)
        key = generate()
        (workdir / "key.pem").write_bytes(private_pem(key))
        (workdir / "key.pub.pem").write_bytes(public_pem(key.public_key()))
        config = {
            "destination": {
                "url": self.cluster_prefix,
                "retention_days": self.retention_days,
                "lock_mode": "Locked",
                "options": s3.destination_options(),
            },
            "stream": {"id": "operator", "signing_key_file": str(workdir / "key.pem")},
            "source": {"cluster": "rig", "namespace": "auditlock-system", "pod": "operator"},
            "sources": {
                # The operator's collector: the capture's tags carry observer marks.
                "forward": {"enabled": False, "observer_tag_prefix": "auditlock.operator"},
                "http": {"host": "127.0.0.1", "port": self.operator.collector_port},
            },
            "spool": {"dir": str(workdir / "spool")},
            "health": {"host": "127.0.0.1", "port": free_port()},
            "delivery": {"max_delay_seconds": 0.5},
        }
        self.operator_collector = SidecarProcess(workdir, config)
        self.operator_collector.start()
        self._stack.callback(self._stop_operator_collector)
        self.narrate(
            f"operator: kopf + webhooks on {self.operator.webhook_url}, audit intake on "
            f"{kube.audit_url}, its collector on 127.0.0.1:{self.operator.collector_port}"
        )

    def apply_policy(self, timeout: float = 30.0) -> dict[str, Any]:
        from kubernetes import client

        kube, s3 = self._kube(), self._s3()
        self.namespace = label_namespace(kube, kube.create_namespace("orders"))
        self.forward_port, self.http_port = free_port(), free_port()
        policy = {
            "apiVersion": "auditlock.io/v1alpha1",
            "kind": "AuditPolicy",
            "metadata": {"name": POLICY, "namespace": self.namespace},
            "spec": {
                "selector": {"matchLabels": APP_LABELS},
                "sources": {
                    "forward": {"port": self.forward_port},
                    "http": {"port": self.http_port},
                    "configFiles": {"paths": [SETTINGS_PATH]},
                },
                "destination": {
                    "s3": {
                        "bucket": self.bucket,
                        "prefix": POLICY,
                        "region": s3.region,
                        "endpoint": s3.endpoint,
                        "credentialsSecret": {"name": "auditlock-s3"},
                    }
                },
                "retention": {"days": self.retention_days, "mode": "Locked"},
                "delivery": {"batchSize": 500, "maxDelayMs": 500, "spoolLimitMiB": 64},
                "enforcement": "required",
            },
        }
        with kube.api_client() as api:
            client.CoreV1Api(api).create_namespaced_secret(
                self.namespace,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(name="auditlock-s3"),
                    string_data={
                        "AWS_ACCESS_KEY_ID": s3.access_key,
                        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                    },
                ),
            )
            custom = client.CustomObjectsApi(api)
            custom.create_namespaced_custom_object(
                "auditlock.io", "v1alpha1", self.namespace, "auditpolicies", policy
            )
        started = time.monotonic()
        status = self.wait_policy(lambda s: _condition(s, "Ready") == "True", timeout)
        self.narrate(
            f"policy {self.namespace}/{POLICY}: Ready in {time.monotonic() - started:.1f} s "
            f"(DestinationLocked={_condition(status, 'DestinationLocked')}, "
            f"key {str(status.get('keyFingerprint', ''))[:16]}…)"
        )
        return status

    def policy_status(self) -> dict[str, Any]:
        from kubernetes import client

        with self._kube().api_client() as api:
            obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "auditlock.io", "v1alpha1", self.namespace, "auditpolicies", POLICY
            )
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def wait_policy(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.policy_status()
            if predicate(status):
                return status
            time.sleep(0.2)
        raise TimeoutError(f"policy status did not reach the expected state: {status}")

    def create_pod(self) -> dict[str, Any]:
        from kubernetes import client

        kube = self._kube()
        with kube.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespaced_config_map(
                self.namespace,
                client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name="orders-settings"),
                    data={"settings.yaml": "currency: EUR\nmax_items: 10\n"},
                ),
            )
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "orders-0", "labels": APP_LABELS},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/orders:1.0",
                            "volumeMounts": [{"name": "settings", "mountPath": SETTINGS_PATH}],
                        }
                    ],
                    "volumes": [{"name": "settings", "configMap": {"name": "orders-settings"}}],
                },
            }
            core.create_namespaced_pod(self.namespace, pod)
        self.pod = bind_to_node(kube, self.namespace, "orders-0", "rig-node-1")
        annotations = self.pod["metadata"].get("annotations") or {}
        self.narrate(
            f"pod {self.namespace}/orders-0 admitted with {COLLECTOR} "
            f"(policy {annotations.get('auditlock.io/policy')}, config hash "
            f"{str(annotations.get('auditlock.io/config-hash', ''))[:12]}), bound to rig-node-1"
        )
        return self.pod

    def run_collector(self, timeout: float = 30.0) -> float:
        """Start the collector exactly as the admitted pod says; seconds until ready."""
        run = ContainerRun(
            kube=self._kube(),
            pod=self.pod,
            container_name=COLLECTOR,
            workdir=self.workdir / "pod-orders-0",
            extra_path=[str(Path(sys.executable).parent)],
            image_paths=sorted({ROOT, Path(sys.prefix), Path(sys.base_prefix)}),
        )
        run.prepare()
        # The app's ConfigMap volume is projected for the collector's read-only mount.
        # The operator certifies the collector's per-pod key only for a container the
        # kubelet reports running; the rig has no kubelet, so report it here.
        collector_running(self._kube(), self.pod)
        started = time.monotonic()
        run.start()
        self.collector = run
        self._stack.callback(self._stop_collector)
        health = self._health_url()
        assert run.proc is not None
        wait_readyz(run.proc, health, run.log_tail, timeout - (time.monotonic() - started))
        ready = time.monotonic() - started
        self.narrate(
            f"collector running as injected: {' '.join(run.container['command'])} "
            f"(stream {run.env.get('AUDITLOCK_SIDECAR__STREAM__ID')}, ready in {ready:.1f} s)"
        )
        return ready

    def send_app_events(self, forward: int = 200, http: int = 50) -> int:
        """The app's side: fluent-logger (Forward) and JSON over HTTP, both unchanged."""
        from fluent import sender

        logger = sender.FluentSender("orders", host="127.0.0.1", port=self.forward_port)
        try:
            for i in range(forward):
                event_id = f"fwd-{i:05d}"
                ok = logger.emit(
                    "data",
                    {
                        "id": event_id,
                        "action": "order.update",
                        "outcome": "success",
                        "actor": {"kind": "user", "name": f"alice{i % 3}", "ip": "10.1.2.3"},
                        "target": {"resource": "orders", "name": f"order-{i}"},
                        "request_id": f"req-{i}",
                    },
                )
                if not ok:
                    raise RuntimeError(f"fluent-logger failed to send: {logger.last_error}")
                self.sent_ids.append(event_id)
        finally:
            logger.close()
        batch = []
        for i in range(http):
            event_id = f"http-{i:05d}"
            batch.append(
                {
                    "id": event_id,
                    "category": "access",
                    "action": "orders.read",
                    "outcome": "success",
                    "actor": {"kind": "serviceaccount", "name": "billing"},
                    "target": {"resource": "orders", "name": f"order-{i}"},
                }
            )
            self.sent_ids.append(event_id)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/v1/events",
            data=json.dumps(batch).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status != 202:
                raise RuntimeError(f"HTTP intake answered {answer.status}")
        self.narrate(f"app: {forward} events with fluent-logger, {http} over HTTP (202 Accepted)")
        return forward + http

    def change_config_file(self) -> None:
        """Edit the app's ConfigMap; project it like the kubelet does (`..data` swap)."""
        from kubernetes import client

        with self._kube().api_client() as api:
            client.CoreV1Api(api).patch_namespaced_config_map(
                "orders-settings",
                self.namespace,
                {"data": {"settings.yaml": "currency: EUR\nmax_items: 25\n"}},
            )
        assert self.collector is not None
        self.collector.reproject("settings")
        self.narrate("config: ConfigMap orders-settings edited; kubelet-style `..data` swap")

    def read_secret(self) -> str:
        """Someone reads a Secret in the audited namespace through the API."""
        from kubernetes import client

        with self._kube().api_client() as api:
            client.CoreV1Api(api).read_namespaced_secret("auditlock-s3", self.namespace)
        self.narrate(f"cluster: admin read Secret {self.namespace}/auditlock-s3 via the API")
        return "auditlock-s3"

    def privileged_activity(self) -> None:
        """What an auditor's report looks for: an RBAC grant, a refused Secret read and an
        exec into the pod (refused too: the rig has no kubelet, the API server records it)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        kube = self._kube()
        rbac = "rbac.authorization.k8s.io"
        with kube.api_client() as api:
            client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
                self.namespace,
                {
                    "metadata": {"name": "auditor-view"},
                    "subjects": [{"kind": "User", "name": "auditor@example.com", "apiGroup": rbac}],
                    "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": rbac},
                },
            )
            client.CoreV1Api(api).create_namespaced_service_account(
                self.namespace, {"metadata": {"name": "reports"}}
            )
        token = kube.service_account_token(self.namespace, "reports")
        with kube.api_client(token=token) as api:
            try:
                client.CoreV1Api(api).read_namespaced_secret("auditlock-s3", self.namespace)
            except ApiException as exc:
                refused = exc.status
            else:
                raise RuntimeError("the ServiceAccount without RBAC could read a Secret")
        pod = self.pod["metadata"]["name"]
        exec_run = kube.kubectl("exec", "-n", self.namespace, pod, "--", "id", check=False)
        self.narrate(
            f"cluster: RoleBinding auditor-view granted; a Secret read by ServiceAccount "
            f"reports refused ({refused}); kubectl exec into {pod} (exit {exec_run.returncode}: "
            "no kubelet in the rig)"
        )

    def operator_public_key_file(self) -> Path:
        assert self.operator_collector is not None
        return self.operator_collector.workdir / "key.pub.pem"

    def trail(self, prefix: str, stream: str | None = None) -> TrailFacts:
        from auditlock import sinks

        s3 = self._s3()
        store = sinks.open(prefix, **s3.destination_options())
        try:
            names = list(store.list("streams/"))
            events = ledger_events(store)
        finally:
            store.close()
        if stream is not None:
            names = [n for n in names if f"streams/{stream}/" in n]
            events = [e for e in events if e["stream"] == stream]
        segments = [n for n in names if "/seg-" in n]
        checkpoints = [n for n in names if "/ckpt-" in n]
        client = s3.client()
        key_prefix = prefix.split("/", 3)[3] + "/"
        modes = {}
        for name in segments + checkpoints:
            head = client.head_object(Bucket=self.bucket, Key=key_prefix + name)
            modes[name] = str(head.get("ObjectLockMode"))
        return TrailFacts(segments, checkpoints, events, modes)

    def certificates(self) -> list[Any]:
        """The certificates (FORMAT.md section 9) stored beside the pod's trail."""
        from auditlock import sinks
        from auditlock.ledger.certificate import decode_certificate

        store = sinks.open(self.pod_prefix, **self._s3().destination_options())
        try:
            return [decode_certificate(store.get(n)) for n in store.list("keys/certs/")]
        finally:
            store.close()

    def namespace_private_keys(self) -> list[str]:
        """Secrets of the audited namespace that hold a private key (per-pod keys: none)."""
        import base64

        from kubernetes import client

        with self._kube().api_client() as api:
            secrets = client.CoreV1Api(api).list_namespaced_secret(self.namespace).items
        return [
            s.metadata.name
            for s in secrets
            if any(b"PRIVATE KEY" in base64.b64decode(v) for v in (s.data or {}).values())
        ]

    def pod_stream(self) -> str:
        assert self.collector is not None
        return self.collector.env["AUDITLOCK_SIDECAR__STREAM__ID"]

    def wait_for_trail(self, timeout: float = 10.0) -> tuple[TrailFacts, float]:
        """Until every sent event and a config event are stored under lock."""
        started = time.monotonic()
        deadline = started + timeout
        wanted = set(self.sent_ids)
        facts = self.trail(self.pod_prefix, self.pod_stream())
        while time.monotonic() < deadline:
            facts = self.trail(self.pod_prefix, self.pod_stream())
            ids = {e["event"].get("id") for e in facts.events}
            configs = [e for e in facts.events if e["event"].get("category") == "configuration"]
            if wanted <= ids and configs and facts.checkpoints:
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        self.narrate(
            f"trail: {len(facts.events)} events in {len(facts.segments)} segments and "
            f"{len(facts.checkpoints)} checkpoints, all "
            f"{sorted(set(facts.modes.values()))} locked, {elapsed:.1f} s after the last send"
        )
        return facts, elapsed

    def wait_for_cluster_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.trail(self.cluster_prefix, "operator").events:
                if predicate(entry["event"]):
                    return entry
            time.sleep(0.5)
        raise TimeoutError("no matching cluster-level event reached the operator's trail")

    def public_key_file(self) -> Path:
        """The policy's public key as an auditor gets it: from the policy's status (no
        Secret access needed), checked against the fingerprint published beside it. With
        per-pod keys (the default) it is the operator's root key, and verify follows the
        certificates stored beside the data."""
        from auditlock.ledger.keys import key_id, load_public_key

        status = self.policy_status()
        path = self.workdir / "orders.pub.pem"
        path.write_text(status["publicKey"])
        if key_id(load_public_key(path)) != status["keyFingerprint"]:
            raise AssertionError("status.publicKey does not match status.keyFingerprint")
        return path

    def store_env(self) -> dict[str, str]:
        """What an auditlock command needs in its environment to read the bucket."""
        return self._s3().env()

    def verify(self, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_auditlock("verify", url, *extra, env=self.store_env())

    def try_delete_locked(self, name: str) -> str:
        """Ask the server to delete the locked version of an object; returns its answer."""
        import botocore.exceptions

        client = self._s3().client()
        key = f"{POLICY}/{name}"
        version = client.head_object(Bucket=self.bucket, Key=key)["VersionId"]
        try:
            client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
        except botocore.exceptions.ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "deleted"

    def copy_trail(self, prefix: str, target: Path, *, tamper: str | None = None) -> Path:
        """Copy a trail from the bucket into a plain folder (a `file://` ledger without
        retention metadata), optionally flipping one byte of one event in `tamper`."""
        from auditlock import sinks
        from auditlock.ledger.segment import decode_segment

        source = sinks.open(prefix, **self._s3().destination_options())
        if target.exists():
            shutil.rmtree(target)
        try:
            for obj in source.list(""):
                path = target / obj
                path.parent.mkdir(parents=True, exist_ok=True)
                data = source.get(obj)
                if obj == tamper:
                    data = _flip_event_byte(
                        data, compressed=obj.endswith(".gz"), decode=decode_segment
                    )
                path.write_bytes(data)
        finally:
            source.close()
        return target

    def tampered_copy(self, name: str) -> Path:
        """Copy the pod trail to a local folder and flip one byte of one event."""
        return self.copy_trail(self.pod_prefix, self.workdir / "tampered", tamper=name)

    def stop_collector_gracefully(self) -> int | None:
        assert self.collector is not None
        return self.collector.stop()

    # -- helpers --------------------------------------------------------------------------

    def _kube(self) -> KubeControlPlane:
        assert self.kube is not None, "start_servers() first"
        return self.kube

    def _s3(self) -> SeaweedFS:
        assert self.s3 is not None, "start_servers() first"
        return self.s3

    def _health_url(self) -> str:
        """Where the injected container says its health port is."""
        assert self.collector is not None
        ports = self.collector.container.get("ports") or []
        if not ports:
            raise RuntimeError("collector declares no health port")
        return f"http://127.0.0.1:{ports[0]['containerPort']}"

    def _stop_collector(self) -> None:
        if self.collector is not None:
            self.collector.stop()

    def _stop_operator_collector(self) -> None:
        if self.operator_collector is not None and self.operator_collector.proc is not None:
            try:
                self.operator_collector.terminate(timeout=20)
            except Exception:
                self.operator_collector.kill()


def _condition(status: dict[str, Any], kind: str) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return "Unknown"


def _flip_event_byte(data: bytes, *, compressed: bool, decode: Callable[..., Any]) -> bytes:
    """Change one character inside the first event of a segment, keeping it valid JSON
    Lines (and re-compressing when it was compressed) so only the hashes can tell."""
    import gzip

    raw = gzip.decompress(data) if compressed else data
    marker = b'"action":"'
    at = raw.index(marker) + len(marker)
    changed = raw[:at] + (b"X" if raw[at : at + 1] != b"X" else b"Y") + raw[at + 1 :]
    list(decode(gzip.compress(changed) if compressed else changed, compressed=compressed))
    return gzip.compress(changed, mtime=0) if compressed else changed
