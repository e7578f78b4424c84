"""Smoke tests proving the Kubernetes test rig is the real thing: each of these would
fail against a mock or a fake API (kmock has no schema validation, no status
subresource, no admission webhooks, no audit pipeline)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.servers.kube_audit import KubeAuditReceiver
from tests.servers.kube_controlplane import KubeControlPlane, free_port

CHART = Path(__file__).with_name("test_rig_kube_chart")


def _wait_for(what: str, check: Any, timeout: float = 20.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- custom resources ---------------------------------------------------------------


@pytest.fixture(scope="module")
def widget_crd(kube_apiserver: KubeControlPlane) -> Iterator[tuple[str, str]]:
    """A namespaced CRD `widgets.<unique group>` with a schema and a status subresource;
    yields (group, plural)."""
    group = f"rig-{uuid.uuid4().hex[:8]}.auditlock.io"
    crd: Any = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1},
                                        "colour": {"type": "string", "enum": ["red", "blue"]},
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    with kube_apiserver.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        ext.create_custom_resource_definition(crd)

        def established() -> bool:
            got: Any = ext.read_custom_resource_definition(f"widgets.{group}")
            conditions = got.status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        _wait_for("the CRD to be Established", established)
        try:
            yield group, "widgets"
        finally:
            ext.delete_custom_resource_definition(f"widgets.{group}")


def _widget(group: str, name: str, **members: Any) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, **members}


def test_custom_resource_round_trips_and_status_is_a_separate_subresource(
    kube_apiserver: KubeControlPlane, kube_namespace: str, widget_crd: tuple[str, str]
) -> None:
    group, plural = widget_crd
    body = _widget(
        group, "w1", spec={"size": 3, "colour": "red"}, status={"phase": "ignored-on-create"}
    )
    with kube_apiserver.api_client() as api:
        custom = client.CustomObjectsApi(api)
        created: Any = custom.create_namespaced_custom_object(
            group, "v1", kube_namespace, plural, body
        )
        # With a status subresource, the main endpoint drops status on create.
        assert "status" not in created

        got: Any = custom.get_namespaced_custom_object(group, "v1", kube_namespace, plural, "w1")
        assert got["spec"] == {"size": 3, "colour": "red"}
        assert got["metadata"]["uid"] and got["metadata"]["resourceVersion"]

        patched: Any = custom.patch_namespaced_custom_object_status(
            group,
            "v1",
            kube_namespace,
            plural,
            "w1",
            {"status": {"phase": "Ready"}, "spec": {"size": 99}},
        )
        # The status endpoint changes status only; the spec change in the same patch is
        # dropped by the API server, and spec changes don't bump status.
        assert patched["status"] == {"phase": "Ready"}
        assert patched["spec"]["size"] == 3
        assert int(patched["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])
        assert patched["metadata"]["generation"] == got["metadata"]["generation"]


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"size": "big"}, "spec.size"),
        ({"size": 0}, "spec.size"),
        ({"size": 2, "colour": "green"}, "spec.colour"),
        ({"colour": "red"}, "spec.size"),
    ],
)
def test_custom_resource_schema_rejects_bad_fields(
    kube_apiserver: KubeControlPlane,
    kube_namespace: str,
    widget_crd: tuple[str, str],
    spec: dict[str, Any],
    complaint: str,
) -> None:
    group, plural = widget_crd
    with kube_apiserver.api_client() as api:
        custom = client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as raised:
            custom.create_namespaced_custom_object(
                group, "v1", kube_namespace, plural, _widget(group, "bad", spec=spec)
            )
    assert raised.value.status == 422
    assert complaint in str(raised.value.body)


def test_custom_resource_unknown_field_is_refused_with_strict_validation(
    kube_apiserver: KubeControlPlane, kube_namespace: str, widget_crd: tuple[str, str]
) -> None:
    group, plural = widget_crd
    body = _widget(group, "typo", spec={"size": 1, "colur": "red"})
    with kube_apiserver.api_client() as api:
        custom = client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as raised:
            custom.create_namespaced_custom_object(
                group, "v1", kube_namespace, plural, body, field_validation="Strict"
            )
        assert raised.value.status == 400
        assert 'unknown field "spec.colur"' in json.loads(raised.value.body or "{}")["message"]
        # Without Strict the API server prunes the unknown field instead.
        stored: Any = custom.create_namespaced_custom_object(
            group, "v1", kube_namespace, plural, body
        )
        assert stored["spec"] == {"size": 1}


# -- a kopf mutating webhook called by the API server -------------------------------


def _wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port}") from err
            time.sleep(0.1)


@contextlib.contextmanager
def _kopf_in_thread(**operator_kwargs: Any) -> Iterator[None]:
    """Run `kopf.operator(...)` in a thread with its own event loop, as the operator
    runs in its pod. Not on the test's loop: when kopf stops, it cancels every task
    created after it started, which would include the test's own."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(kopf.operator(stop_flag=stop, **operator_kwargs))
        except BaseException as err:  # reported by the test below, not lost in a thread
            failure.append(err)

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "kopf did not stop within 30 s"
        assert not failure, f"kopf failed: {failure[0]!r}"


@pytest.fixture
def kopf_mutator(kube_apiserver: KubeControlPlane, kube_namespace: str) -> Iterator[str]:
    """Runs a kopf operator in-process whose mutating handler annotates and labels every
    Pod created in `kube_namespace`, served over TLS on 127.0.0.1, and registers a
    MutatingWebhookConfiguration pointing at it. Yields the webhook configuration name."""
    registry = kopf.OperatorRegistry()
    handler_id = "rig-mutate-pods"

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> Any:
        return kube_apiserver.kopf_connection_info()

    @kopf.on.mutate("pods", operations={"CREATE"}, id=handler_id, registry=registry)
    def mutate(patch: kopf.Patch, **_: Any) -> None:
        patch.metadata.annotations["rig.auditlock.io/mutated-by"] = "kopf"
        patch.metadata.labels["rig.auditlock.io/mutated"] = "true"

    port = free_port()
    cert = kube_apiserver.issue_serving_cert(f"kopf-webhook-{port}")
    settings = kopf.OperatorSettings()
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1",
        port=port,
        host="127.0.0.1",
        certfile=str(cert.cert_path),
        pkeyfile=str(cert.key_path),
        cafile=str(kube_apiserver.ca_path),
    )
    settings.admission.managed = None  # we register the configuration ourselves, below
    settings.posting.enabled = False
    name = f"rig-mutate-{kube_namespace}"
    webhook_config: Any = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "pods.rig.auditlock.io",
                "clientConfig": {
                    # kopf serves each handler at /<handler id>.
                    "url": f"https://127.0.0.1:{port}/{handler_id}",
                    "caBundle": kube_apiserver.ca_bundle_b64,
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE"],
                    }
                ],
                # Only this test's namespace: other tests' pods never reach this webhook.
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": kube_namespace}
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
        ],
    }
    with _kopf_in_thread(
        registry=registry, settings=settings, namespaces=[kube_namespace], standalone=True
    ):
        _wait_port(port)
        with kube_apiserver.api_client() as api:
            admission = client.AdmissionregistrationV1Api(api)
            admission.create_mutating_webhook_configuration(webhook_config)
            try:
                yield name
            finally:
                admission.delete_mutating_webhook_configuration(name)


def _pod(name: str) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }


def test_kopf_mutating_webhook_is_called_for_pod_create(
    kube_apiserver: KubeControlPlane, kube_namespace: str, kopf_mutator: str
) -> None:
    with kube_apiserver.api_client() as api:
        core = client.CoreV1Api(api)

        # The API server picks up a new webhook configuration within about a second; a
        # server-side dry run goes through admission without storing anything.
        def mutated_dry_run() -> bool:
            pod: Any = core.create_namespaced_pod(kube_namespace, _pod("probe"), dry_run="All")
            return (pod.metadata.annotations or {}).get("rig.auditlock.io/mutated-by") == "kopf"

        _wait_for("the webhook configuration to take effect", mutated_dry_run, interval=0.3)
        core.create_namespaced_pod(kube_namespace, _pod("app"))
        stored: Any = core.read_namespaced_pod("app", kube_namespace)
    assert stored.metadata.annotations["rig.auditlock.io/mutated-by"] == "kopf"
    assert stored.metadata.labels["rig.auditlock.io/mutated"] == "true"
    # No scheduler, no kubelet: the pod is admitted and stays Pending.
    assert stored.status.phase == "Pending"
    # The ServiceAccount admission plugin ran too (needs the namespace's `default` SA).
    assert stored.spec.service_account_name == "default"


# -- the API server's audit webhook ---------------------------------------------------


@pytest.fixture
async def audit_receiver(kube_apiserver: KubeControlPlane) -> AsyncIterator[list[dict[str, Any]]]:
    """An HTTPS server on the reserved audit port collecting every audit event the API
    server posts (it posts `audit.k8s.io/v1` EventList batches)."""
    events: list[dict[str, Any]] = []
    kinds: set[tuple[str, str]] = set()

    async def receive(request: web.Request) -> web.Response:
        batch = await request.json()
        # Items of an EventList carry no apiVersion/kind of their own; stamp them on.
        for event in batch["items"]:
            events.append({"apiVersion": batch["apiVersion"], "kind": "Event", **event})
        kinds.add((batch["apiVersion"], batch["kind"]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/audit", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        kube_apiserver.audit_port,
        ssl_context=kube_apiserver.audit_ssl_context(),
        reuse_address=True,
    )
    await site.start()
    try:
        yield events
    finally:
        await runner.cleanup()
    assert kinds <= {("audit.k8s.io/v1", "EventList")}, kinds


@pytest.mark.asyncio(loop_scope="session")
async def test_reading_a_secret_delivers_an_audit_event_to_the_webhook(
    kube_apiserver: KubeControlPlane, kube_namespace: str, audit_receiver: list[dict[str, Any]]
) -> None:
    secret_value = uuid.uuid4().hex
    with kube_apiserver.api_client() as api:
        core = client.CoreV1Api(api)
        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name="db-password"),
            string_data={"password": secret_value},
        )
        await asyncio.to_thread(core.create_namespaced_secret, kube_namespace, secret)
        await asyncio.to_thread(core.read_namespaced_secret, "db-password", kube_namespace)

    def secret_read() -> dict[str, Any] | None:
        for event in audit_receiver:
            ref = event.get("objectRef", {})
            if (
                event.get("verb") == "get"
                and ref.get("resource") == "secrets"
                and ref.get("namespace") == kube_namespace
                and ref.get("name") == "db-password"
            ):
                return event
        return None

    deadline = time.monotonic() + 15
    while (event := secret_read()) is None:
        assert time.monotonic() < deadline, "no audit event for the Secret read within 15 s"
        await asyncio.sleep(0.2)

    assert event["apiVersion"] == "audit.k8s.io/v1" and event["kind"] == "Event"
    assert event["user"]["username"] == "admin"
    assert event["stage"] == "ResponseComplete" and event["responseStatus"]["code"] == 200
    assert event["sourceIPs"] == ["127.0.0.1"]
    assert event["level"] == "Metadata"
    # The policy logs Secrets at Metadata level: the value never leaves the API server.
    assert secret_value not in json.dumps(audit_receiver)


def test_rbac_changes_are_audited_with_the_request_body(
    kube_apiserver: KubeControlPlane,
    kube_namespace: str,
    kube_audit_receiver: KubeAuditReceiver,
) -> None:
    role: Any = {
        "metadata": {"name": "secret-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    binding: Any = {
        "metadata": {"name": "read-secrets"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "secret-reader",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": kube_namespace}],
    }
    with kube_apiserver.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(kube_namespace, role)
        rbac.create_namespaced_role_binding(kube_namespace, binding)

    def created(resource: str, name: str) -> Callable[[dict[str, Any]], bool]:
        def match(event: dict[str, Any]) -> bool:
            ref = event.get("objectRef", {})
            return (
                event.get("verb") == "create"
                and ref.get("resource") == resource
                and ref.get("namespace") == kube_namespace
                and ref.get("name") == name
            )

        return match

    event = kube_audit_receiver.wait_for(created("rolebindings", "read-secrets"))
    assert event["level"] == "Request"
    assert event["requestObject"]["roleRef"]["name"] == "secret-reader"
    assert event["requestObject"]["subjects"][0]["name"] == "default"
    role_event = kube_audit_receiver.wait_for(created("roles", "secret-reader"))
    assert role_event["requestObject"]["rules"][0]["resources"] == ["secrets"]
    assert set(kube_audit_receiver.batches) == {("audit.k8s.io/v1", "EventList")}


def test_exec_into_a_pod_is_audited_even_without_a_kubelet(
    kube_apiserver: KubeControlPlane,
    kube_namespace: str,
    kube_audit_receiver: KubeAuditReceiver,
) -> None:
    with kube_apiserver.api_client() as api:
        client.CoreV1Api(api).create_namespaced_pod(kube_namespace, _pod("app"))
    # No node runs the pod, so the exec itself fails; the attempt is what gets audited.
    tried = kube_apiserver.kubectl(
        "exec", "-n", kube_namespace, "app", "--", "cat", "/etc/passwd", check=False, timeout=30
    )
    assert tried.returncode != 0

    event = kube_audit_receiver.wait_for(
        lambda e: (
            e.get("objectRef", {}).get("subresource") == "exec"
            and e["objectRef"].get("namespace") == kube_namespace
        )
    )
    assert event["objectRef"]["resource"] == "pods" and event["objectRef"]["name"] == "app"
    assert event["user"]["username"] == "admin"
    assert "command=cat" in event["requestURI"]
    assert event["responseStatus"]["code"] >= 400


# -- kubectl and helm -------------------------------------------------------------------


def test_kubectl_get_raw_version_reports_the_built_version(
    kube_apiserver: KubeControlPlane,
) -> None:
    answer = json.loads(kube_apiserver.kubectl("get", "--raw", "/version").stdout)
    assert answer["gitVersion"] == kube_apiserver.version
    assert (int(answer["major"]), int(answer["minor"])) >= (1, 33)


def test_service_account_token_is_authenticated_and_limited_by_rbac(
    kube_apiserver: KubeControlPlane, kube_namespace: str
) -> None:
    token = kube_apiserver.service_account_token(kube_namespace, "default")
    whoami = kube_apiserver.kubectl("auth", "whoami", "-o", "json", token=token)
    username = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{kube_namespace}:default"
    denied = kube_apiserver.kubectl(
        "get", "secrets", "-n", kube_namespace, token=token, check=False
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_helm_template_renders_a_chart_that_the_api_server_accepts(
    kube_apiserver: KubeControlPlane, kube_namespace: str, helm_path: Path
) -> None:
    rendered = subprocess.run(
        [str(helm_path), "template", "smoke", str(CHART), "--set", "greeting=hi there"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("ConfigMap", "smoke-greeting")]
    assert docs[0]["data"]["greeting"] == "HI THERE"

    manifest = Path(kube_apiserver.workdir) / f"smoke-{kube_namespace}.yaml"
    manifest.write_text(rendered)
    kube_apiserver.kubectl("apply", "-n", kube_namespace, "-f", str(manifest))
    with kube_apiserver.api_client() as api:
        stored: Any = client.CoreV1Api(api).read_namespaced_config_map(
            "smoke-greeting", kube_namespace
        )
    assert stored.data == {"greeting": "HI THERE"}
    assert stored.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
