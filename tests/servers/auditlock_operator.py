"""The auditlock operator, in-process, against the rig's real kube-apiserver.

- `auditpolicy_crd` (session): crds/ applied and Established
- `running_operator` (session): kopf + the webhook server on 127.0.0.1 over TLS (a
  certificate from the rig's CA), the audit intake on the rig's reserved audit port, and
  Mutating/ValidatingWebhookConfigurations pointing at it (url clientConfig + caBundle)
- `operator_collector` (function): the operator's collector sidecar (`auditlock sidecar`,
  rendered by the operator's own renderer, storing on file://) on the port the operator
  sends cluster-level events to; yields the store directory
- `start_operator(kube, token=...)`: the same, e.g. authenticated as the chart's
  ServiceAccount instead of admin (the chart tests use this to prove the RBAC suffices)

The operator hands cluster-level events to the HTTP intake of a collector at
`collector_port`; tests that need the collector start one (`auditlock sidecar`) there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditlock.ledger.keys import Signer, generate
from auditlock.operator import keys
from auditlock.operator.certificates import PATH as CERTIFICATE_PATH
from auditlock.operator.runner import OperatorConfig, OperatorThread
from auditlock.operator.sidecar_config import render
from auditlock.operator.webhook_config import webhook_configurations
from auditlock.operator.webhook_server import Listener
from auditlock.policy import parse_spec
from tests.servers.auditlock_child import auditlock_child
from tests.servers.kube_controlplane import KubeControlPlane, free_port
from tests.servers.sidecar import wait_readyz

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_NAME = "auditlock-test"
# The test webhooks only see namespaces with this label, so other tests sharing the API
# server are never affected (label yours with `label_namespace`).
TEST_NAMESPACE_LABEL = {"auditlock.io/test-operator": "true"}
TEST_SIDECAR_IMAGE = "auditlock/sidecar:test"
# Where the rig's operators keep the key Secret values are hashed under (the chart: the
# release namespace); read it with `secret_hash_key(kube)`.
SECRET_HASH_KEY = ("default", "auditlock-secret-hash-key")


@dataclass
class RunningOperator:
    thread: OperatorThread
    webhook_url: str
    collector_port: int
    kube: KubeControlPlane
    # The root key certifying per-pod keys (the default `signing: perPod`); an auditor
    # verifies those trails with `root.public`. None: started without one.
    root: Signer | None = None

    def stop(self) -> None:
        unregister_webhooks(self.kube)
        self.thread.stop()


def apply_crd(kube: KubeControlPlane, timeout: float = 30.0) -> None:
    """Create or replace every generated CRD (crds/*.yaml) and wait until each serves."""
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        _apply_one_crd(kube, yaml.safe_load(path.read_text()), timeout)


def _apply_one_crd(kube: KubeControlPlane, crd: dict[str, Any], timeout: float) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with kube.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = ext.read_custom_resource_definition(crd["metadata"]["name"]).status
            if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
                return
            time.sleep(0.1)
    raise TimeoutError(f"CRD {crd['metadata']['name']} not Established")


def register_webhooks(kube: KubeControlPlane, url: str, name: str = WEBHOOK_NAME) -> None:
    """(Re)create the webhook configurations under `name`, pointing at `url`."""
    from kubernetes import client

    mutating, validating = webhook_configurations(
        name, kube.ca_pem, url=url, timeout_seconds=5, namespace_labels=TEST_NAMESPACE_LABEL
    )
    unregister_webhooks(kube, name)
    with kube.api_client() as api:
        adm = client.AdmissionregistrationV1Api(api)
        adm.create_mutating_webhook_configuration(mutating)
        adm.create_validating_webhook_configuration(validating)


def unregister_webhooks(kube: KubeControlPlane, name: str = WEBHOOK_NAME) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with kube.api_client() as api:
        adm = client.AdmissionregistrationV1Api(api)
        for delete in (
            adm.delete_mutating_webhook_configuration,
            adm.delete_validating_webhook_configuration,
        ):
            try:
                delete(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def label_namespace(kube: KubeControlPlane, namespace: str) -> str:
    """Put a namespace in scope of the test webhooks."""
    from kubernetes import client

    with kube.api_client() as api:
        client.CoreV1Api(api).patch_namespace(
            namespace, {"metadata": {"labels": TEST_NAMESPACE_LABEL}}
        )
    return namespace


def start_operator(
    kube: KubeControlPlane,
    *,
    token: str | None = None,
    audit_intake: bool = True,
    refresh_seconds: float = 2.0,
    watch_fallback: bool = True,
    register: bool = True,
    cluster: str = "rig",
    secret_hash_key: tuple[str, str] | None = SECRET_HASH_KEY,
    **overrides: Any,
) -> RunningOperator:
    """`cluster=""` lets the operator derive its cluster name (kube-system's UID);
    `secret_hash_key=None` runs it without the Secret hash key (Secret writes unhashed).
    Like the chart's, it certifies per-pod keys under a root key of its own (pass
    `root_key=None` for an operator without one) and tells injected collectors its
    certificate URL and the rig's CA."""
    overrides.setdefault("root_key", Signer(generate()))
    port = free_port()
    pair = kube.issue_serving_cert("auditlock-operator")
    listeners = [Listener("127.0.0.1", port, kube.server_ssl_context(pair))]
    if audit_intake:
        listeners.append(Listener("127.0.0.1", kube.audit_port, kube.audit_ssl_context()))
    collector_port = free_port()
    config = OperatorConfig(
        api_client=kube.api_client(token=token),
        webhook_listeners=listeners,
        sidecar_image=TEST_SIDECAR_IMAGE,
        cluster=cluster,
        kopf_connection=kube.kopf_connection_info(token=token),
        refresh_seconds=refresh_seconds,
        checkpoint_scan_seconds=refresh_seconds,
        collector=f"127.0.0.1:{collector_port}",
        watch_fallback=watch_fallback,
        secret_hash_key=secret_hash_key,
        **{
            "certificate_url": f"https://127.0.0.1:{port}{CERTIFICATE_PATH}",
            "certificate_ca": kube.ca_pem.decode(),
            **overrides,
        },
    )
    thread = OperatorThread(config).start()
    url = f"https://127.0.0.1:{port}"
    if register:
        register_webhooks(kube, url)
    return RunningOperator(thread, url, collector_port, kube, config.root_key)


def secret_hash_key(kube: KubeControlPlane, ref: tuple[str, str] = SECRET_HASH_KEY) -> bytes:
    """The key an operator of the rig hashes Secret values under, as an auditor given it
    would read it: `kubectl get secret -o jsonpath={.data.key} | base64 -d`."""
    import base64

    secret = kube.get_json(f"/api/v1/namespaces/{ref[0]}/secrets/{ref[1]}")
    return base64.b64decode(secret["data"]["key"])


def post_pod_review(
    url: str, kube: KubeControlPlane, namespace: str, uid: str = "u"
) -> dict[str, Any]:
    """POST a Pod CREATE AdmissionReview to `url`/mutate-pods over TLS (the rig's CA) and
    return its `response`: what the API server would get from the webhook."""
    import json
    import ssl
    import urllib.request

    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": {
                "metadata": {"name": "p", "labels": {"app": "payments"}},
                "spec": {"containers": [{"name": "app", "image": "a"}]},
            },
        },
    }
    request = urllib.request.Request(
        f"{url}/mutate-pods",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        answer: dict[str, Any] = json.load(response)["response"]
        return answer


@pytest.fixture(scope="session")
def auditpolicy_crd(kube_apiserver: KubeControlPlane) -> KubeControlPlane:
    apply_crd(kube_apiserver)
    return kube_apiserver


@pytest.fixture(scope="module")
def running_operator(auditpolicy_crd: KubeControlPlane) -> Iterator[RunningOperator]:
    """Module-scoped: the audit port and the webhooks are released for other modules."""
    running = start_operator(auditpolicy_crd)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def operator_namespace(kube_apiserver: KubeControlPlane, kube_namespace: str) -> str:
    """A fresh namespace the test webhooks serve."""
    return label_namespace(kube_apiserver, kube_namespace)


@contextmanager
def operator_collector_process(collector_port: int, workdir: Path) -> Iterator[Path]:
    """The operator's collector sidecar (configured as the chart does) with its HTTP
    intake on `collector_port`; yields the directory its ledger is stored in."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "operator-trail"
    spec = parse_spec({"destination": {"file": {"path": str(store)}}, "retention": {"days": 1}})
    config: dict[str, Any] = render(spec, cluster="rig")
    material = keys.generate()
    key_file = workdir / "ed25519.pem"
    key_file.write_bytes(material.private_pem)
    (workdir / "ed25519.pub.pem").write_bytes(material.public_pem)
    config["stream"] = {"id": "auditlock-system_operator", "signing_key_file": str(key_file)}
    config["sources"]["forward"]["port"] = free_port()
    # The operator's own collector: its capture tags carry observer marks (as in the chart).
    config["sources"]["forward"]["observer_tag_prefix"] = "auditlock.operator"
    config["sources"]["http"]["port"] = collector_port
    health_port = free_port()
    config["health"] = {"host": "127.0.0.1", "port": health_port}
    config["spool"]["dir"] = str(workdir / "spool")
    config["delivery"]["max_delay_seconds"] = 0.2
    config_file = workdir / "sidecar.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = workdir / "sidecar.log"
    with auditlock_child(["sidecar", "--config", str(config_file)], log) as proc:
        # Ready before the test acts: until then the operator answers the API server's
        # audit batches 503, and the API server drops a batch after a few seconds of
        # retries, so a slow start would lose the very events a test looks for.
        wait_readyz(proc, f"http://127.0.0.1:{health_port}", lambda: log.read_text()[-2000:], 60)
        yield store


@pytest.fixture
def operator_collector(running_operator: RunningOperator, tmp_path: Path) -> Iterator[Path]:
    """The operator's collector sidecar on the port the operator sends to; yields the
    directory its ledger is stored in."""
    with operator_collector_process(running_operator.collector_port, tmp_path) as store:
        yield store


def remove_policy(kube: KubeControlPlane, namespace: str, name: str, timeout: float = 10.0) -> None:
    """Delete an AuditPolicy and wait until it is gone (the operator's finalizer runs its
    cleanup), dropping the finalizer if the operator is not there to do it. Without this
    the policy outlives its test namespace in the rig's etcd (no namespace controller
    empties it), and every operator started later resumes it and retries against a
    namespace that no longer exists."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    group, version, plural = "auditlock.io", "v1alpha1", "auditpolicies"
    with kube.api_client() as api:
        custom = client.CustomObjectsApi(api)
        try:
            custom.delete_namespaced_custom_object(group, version, namespace, plural, name)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                custom.get_namespaced_custom_object(group, version, namespace, plural, name)
                time.sleep(0.2)
            custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, {"metadata": {"finalizers": None}}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
