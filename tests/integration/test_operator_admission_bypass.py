"""Attacks on injection through the real kube-apiserver, as an app team would try them
with kubectl: a look-alike collector, app containers reading the signing key or the
spool, a shared process namespace, and `kubectl debug` into an audited pod.

The operator runs in-process with its webhooks registered on the rig's API server
(tests/servers/auditlock_operator.py); pods stay Pending (no kubelet), so each test reads
what the API server admitted, or the refusal it answered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from auditlock.operator import names as n
from auditlock.operator.webhook_config import webhook_configurations
from tests.helpers.policies import (
    condition,
    create_policy,
    create_ready_policy,
    file_spec,
    wait_condition,
)
from tests.servers.auditlock_operator import (
    TEST_NAMESPACE_LABEL,
    TEST_SIDECAR_IMAGE,
    RunningOperator,
    register_webhooks,
    remove_policy,
    unregister_webhooks,
)
from tests.servers.kube_controlplane import KubeControlPlane

KEY_SECRET = n.key_secret_name("pci")


def pod_body(spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"p-{uuid.uuid4().hex[:8]}",
            "labels": labels or {"app": "payments"},
        },
        "spec": spec,
    }


def app(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "registry.example/app:1", **extra}


def kubectl_create(kube: KubeControlPlane, namespace: str, body: dict[str, Any]) -> Any:
    """`kubectl create -f -` as the app team would; the CompletedProcess (not checked)."""
    import subprocess

    from tests.servers.kube_assets import find_binary

    return subprocess.run(
        [
            str(find_binary("kubectl")),
            f"--kubeconfig={kube.kubeconfig}",
            "-n",
            namespace,
            "create",
            "-o",
            "json",
            "-f",
            "-",
        ],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=60,
    )


def admitted(kube: KubeControlPlane, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    done = kubectl_create(kube, namespace, body)
    assert done.returncode == 0, done.stderr
    pod: dict[str, Any] = json.loads(done.stdout)
    return pod


def admitted_app(kube: KubeControlPlane, namespace: str) -> dict[str, Any]:
    """A pod of just the app container, as admitted (with the collector injected)."""
    return admitted(kube, namespace, pod_body({"containers": [app()]}))


def refused(kube: KubeControlPlane, namespace: str, body: dict[str, Any]) -> str:
    """The refusal kubectl printed; asserts the pod does not exist."""
    done = kubectl_create(kube, namespace, body)
    assert done.returncode != 0, f"admitted: {done.stdout[:2000]}"
    assert "denied the request" in done.stderr, done.stderr
    missing = kube.kubectl("get", "pod", "-n", namespace, body["metadata"]["name"], check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    return str(done.stderr)


def collector_of(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    found = [
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key) or []
        if c["name"] == n.COLLECTOR_CONTAINER
    ]
    assert len(found) == 1
    return found[0]


@pytest.fixture
def policy_pci(running_operator: RunningOperator, operator_namespace: str) -> Iterator[None]:
    """Removes the test's AuditPolicy `pci` afterwards (see remove_policy)."""
    yield
    remove_policy(running_operator.kube, operator_namespace, "pci")


@pytest.fixture
def required_namespace(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path, policy_pci: None
) -> str:
    kube = running_operator.kube
    # A shared key: the guarded key Secret (KEY_SECRET) exists only with `signing: shared`.
    spec = file_spec(tmp_path / "t", enforcement="required", signing="shared")
    create_policy(kube, operator_namespace, "pci", spec)
    wait_condition(kube, operator_namespace, "pci", "Ready", "True")
    return operator_namespace


@pytest.fixture
def optional_namespace(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path, policy_pci: None
) -> str:
    kube = running_operator.kube
    spec = file_spec(tmp_path / "t", signing="shared")  # the guarded key Secret exists
    create_ready_policy(kube, operator_namespace, "pci", spec)
    return operator_namespace


@pytest.fixture
def enforcement_only(running_operator: RunningOperator) -> Iterator[None]:
    """Only the validating webhook: what stands when injection did not run (it fails
    open) or was skipped."""
    register_only_enforcement(running_operator)
    try:
        yield
    finally:
        register_webhooks(running_operator.kube, running_operator.webhook_url)


def register_only_enforcement(running: RunningOperator) -> None:
    unregister_webhooks(running.kube)
    _, validating = webhook_configurations(
        "auditlock-test",
        running.kube.ca_pem,
        url=running.webhook_url,
        namespace_labels=TEST_NAMESPACE_LABEL,
    )
    with running.kube.api_client() as api:
        client.AdmissionregistrationV1Api(api).create_validating_webhook_configuration(validating)


LOOK_ALIKES = {
    "busybox container": {
        "containers": [
            app(),
            {"name": n.COLLECTOR_CONTAINER, "image": "busybox", "command": ["sleep", "1d"]},
        ]
    },
    "init container that exits at once": {
        "initContainers": [
            {"name": n.COLLECTOR_CONTAINER, "image": "busybox", "command": ["true"]}
        ],
        "containers": [app()],
    },
}


@pytest.mark.parametrize("spec", LOOK_ALIKES.values(), ids=list(LOOK_ALIKES))
def test_look_alike_collector_is_replaced_by_the_real_one(
    running_operator: RunningOperator, required_namespace: str, spec: dict[str, Any]
) -> None:
    kube = running_operator.kube
    pod = admitted(kube, required_namespace, pod_body(spec))
    collector = collector_of(pod)
    assert collector["image"] == TEST_SIDECAR_IMAGE
    assert collector["command"][:2] == ["auditlock", "sidecar"]
    assert "busybox" not in json.dumps(pod["spec"])
    assert pod["metadata"]["annotations"][n.ANNOTATION_POLICY] == "pci"


@pytest.mark.parametrize("spec", LOOK_ALIKES.values(), ids=list(LOOK_ALIKES))
def test_look_alike_collector_is_refused_by_enforcement(
    running_operator: RunningOperator,
    required_namespace: str,
    enforcement_only: None,
    spec: dict[str, Any],
) -> None:
    message = refused(running_operator.kube, required_namespace, pod_body(spec))
    assert "AuditPolicy pci (enforcement: required)" in message
    assert "is not the one the operator injects" in message


def test_a_copied_collector_with_an_edited_image_is_refused(
    running_operator: RunningOperator, required_namespace: str
) -> None:
    """Everything as injected (read back from an admitted pod), but another image."""
    kube = running_operator.kube
    genuine = admitted_app(kube, required_namespace)
    spec = genuine["spec"]
    copy = {
        "initContainers": spec.get("initContainers"),
        "containers": spec["containers"],
        "volumes": spec["volumes"],
    }
    collector_of({"spec": copy})["image"] = "registry.example/not-auditlock:1"
    body = pod_body({k: v for k, v in copy.items() if v})
    body["metadata"]["annotations"] = genuine["metadata"]["annotations"]
    # With injection, the look-alike is replaced ...
    assert collector_of(admitted(kube, required_namespace, body))["image"] == TEST_SIDECAR_IMAGE
    # ... and without it, enforcement names the difference.
    register_only_enforcement(running_operator)
    try:
        body["metadata"]["name"] += "-2"
        message = refused(kube, required_namespace, body)
        assert "image is 'registry.example/not-auditlock:1'" in message
        # The untouched copy is the genuine collector: admitted as already injected.
        collector_of({"spec": copy})["image"] = TEST_SIDECAR_IMAGE
        body["metadata"]["name"] += "-3"
        assert collector_of(admitted(kube, required_namespace, body))["image"] == (
            TEST_SIDECAR_IMAGE
        )
    finally:
        register_webhooks(kube, running_operator.webhook_url)


KEY_READS = {
    "mounts auditlock-key": {
        "containers": [app(volumeMounts=[{"name": n.VOLUME_KEY, "mountPath": "/k"}])]
    },
    "mounts auditlock-spool": {
        "containers": [app(volumeMounts=[{"name": n.VOLUME_SPOOL, "mountPath": "/s"}])]
    },
    "the key Secret under another name": {
        "containers": [app(volumeMounts=[{"name": "certs", "mountPath": "/certs"}])],
        "volumes": [{"name": "certs", "secret": {"secretName": KEY_SECRET}}],
    },
    "a projected volume with the key Secret": {
        "containers": [app(volumeMounts=[{"name": "bundle", "mountPath": "/b"}])],
        "volumes": [
            {
                "name": "bundle",
                "projected": {
                    "sources": [
                        {"configMap": {"name": "kube-root-ca.crt"}},
                        {"secret": {"name": KEY_SECRET}},
                    ]
                },
            }
        ],
    },
    "an env var from the key Secret": {
        "containers": [
            app(
                env=[
                    {
                        "name": "K",
                        "valueFrom": {"secretKeyRef": {"name": KEY_SECRET, "key": n.KEY_FILE}},
                    }
                ]
            )
        ]
    },
    "envFrom the key Secret": {"containers": [app(envFrom=[{"secretRef": {"name": KEY_SECRET}}])]},
}


@pytest.mark.parametrize("spec", KEY_READS.values(), ids=list(KEY_READS))
def test_app_containers_cannot_reach_the_key_or_the_spool(
    running_operator: RunningOperator, required_namespace: str, spec: dict[str, Any]
) -> None:
    message = refused(running_operator.kube, required_namespace, pod_body(spec))
    assert "auditlock refuses pod" in message
    assert KEY_SECRET in message or "which only the collector the operator injects" in message


@pytest.mark.parametrize(
    "spec",
    [KEY_READS["the key Secret under another name"], KEY_READS["mounts auditlock-key"]],
    ids=["secret volume", "reserved volume name"],
)
def test_key_is_guarded_for_unselected_pods_and_optional_policies(
    running_operator: RunningOperator, optional_namespace: str, spec: dict[str, Any]
) -> None:
    """Any pod of the namespace (selected or not), under optional enforcement too: the
    injection webhook refuses it."""
    kube = running_operator.kube
    for labels in ({"app": "payments"}, {"app": "batch"}):
        refused(kube, optional_namespace, pod_body(spec, labels))


@pytest.mark.parametrize("field", ["shareProcessNamespace", "hostPID"])
def test_shared_process_namespace_is_refused_under_required(
    running_operator: RunningOperator, required_namespace: str, field: str
) -> None:
    body = pod_body({field: True, "containers": [app()]})
    message = refused(running_operator.kube, required_namespace, body)
    assert f"{field}: true" in message and "enforcement: required" in message


def test_shared_process_namespace_is_warned_under_optional(
    running_operator: RunningOperator, optional_namespace: str
) -> None:
    kube = running_operator.kube
    body = pod_body({"shareProcessNamespace": True, "containers": [app()]})
    done = kubectl_create(kube, optional_namespace, body)
    assert done.returncode == 0, done.stderr
    assert "Warning:" in done.stderr and "shareProcessNamespace: true" in done.stderr
    pod = json.loads(done.stdout)
    assert collector_of(pod)["image"] == TEST_SIDECAR_IMAGE
    # ... and the policy's status keeps it on record, naming the pod.
    policy = wait_condition(
        kube, optional_namespace, "pci", "CollectorIsolated", "False", timeout=15
    )
    isolated = condition(policy, "CollectorIsolated")
    assert isolated["reason"] == "SharedProcessNamespace"
    assert pod["metadata"]["name"] in isolated["message"]
    assert "signing key" in isolated["message"]
    with kube.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_pod(
            pod["metadata"]["name"], optional_namespace, grace_period_seconds=0
        )
    policy = wait_condition(
        kube, optional_namespace, "pci", "CollectorIsolated", "True", timeout=15
    )
    assert condition(policy, "CollectorIsolated")["reason"] == "NoSharedProcessNamespace"


def add_ephemeral(
    kube: KubeControlPlane, namespace: str, pod: str, container: dict[str, Any]
) -> None:
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        current = core.read_namespaced_pod(pod, namespace)
        body = api.sanitize_for_serialization(current)
        body["spec"]["ephemeralContainers"] = [
            *(body["spec"].get("ephemeralContainers") or []),
            container,
        ]
        core.patch_namespaced_pod_ephemeralcontainers(pod, namespace, body)


def test_kubectl_debug_cannot_target_the_collector(
    running_operator: RunningOperator, required_namespace: str
) -> None:
    kube = running_operator.kube
    name = admitted_app(kube, required_namespace)["metadata"]["name"]
    attack = kube.kubectl(
        "debug", "-n", required_namespace, name, "--image=busybox",
        f"--target={n.COLLECTOR_CONTAINER}", "--",
        "cat", f"/proc/1/root{n.KEY_MOUNT}/{n.KEY_FILE}",
        check=False,
    )  # fmt: skip
    assert attack.returncode != 0
    assert "denied the request" in attack.stderr
    assert f"targets {n.COLLECTOR_CONTAINER}" in attack.stderr
    # Debugging the app itself is still allowed.
    fine = kube.kubectl(
        "debug", "-n", required_namespace, name, "--image=busybox", "--target=app", check=False
    )
    assert fine.returncode == 0, fine.stderr
    with kube.api_client() as api:
        current = client.CoreV1Api(api).read_namespaced_pod(name, required_namespace)
    targets = [c.target_container_name for c in current.spec.ephemeral_containers or []]
    assert targets == ["app"]


@pytest.mark.parametrize("volume", [n.VOLUME_KEY, n.VOLUME_SPOOL])
def test_ephemeral_container_cannot_mount_the_key_or_the_spool(
    running_operator: RunningOperator, optional_namespace: str, volume: str
) -> None:
    kube = running_operator.kube
    pod = admitted_app(kube, optional_namespace)
    container = {
        "name": "debugger",
        "image": "busybox",
        "volumeMounts": [{"name": volume, "mountPath": "/x"}],
    }
    with pytest.raises(ApiException) as denied:
        add_ephemeral(kube, optional_namespace, pod["metadata"]["name"], container)
    assert denied.value.status == 403
    assert f"mounts volume '{volume}'" in str(denied.value.body)


def test_kubectl_set_image_cannot_swap_the_collector(
    running_operator: RunningOperator, required_namespace: str
) -> None:
    """Container images are the one mutable part of a pod spec: the collector's must stay."""
    kube = running_operator.kube
    name = admitted_app(kube, required_namespace)["metadata"]["name"]
    swap = kube.kubectl(
        "set", "image", "-n", required_namespace, f"pod/{name}",
        f"{n.COLLECTOR_CONTAINER}=busybox", check=False,
    )  # fmt: skip
    assert swap.returncode != 0
    assert "denied the request" in swap.stderr
    assert f"the image of {n.COLLECTOR_CONTAINER} cannot change in a running pod" in swap.stderr
    with kube.api_client() as api:
        current = client.CoreV1Api(api).read_namespaced_pod(name, required_namespace)
    images = {
        c.name: c.image for c in [*(current.spec.init_containers or []), *current.spec.containers]
    }
    assert images[n.COLLECTOR_CONTAINER] == TEST_SIDECAR_IMAGE
    # The app's image may change, and labels change without the webhooks being asked.
    fine = kube.kubectl(
        "set", "image", "-n", required_namespace, f"pod/{name}", "app=registry.example/app:2",
        check=False,
    )  # fmt: skip
    assert fine.returncode == 0, fine.stderr
    labelled = kube.kubectl(
        "label", "-n", required_namespace, f"pod/{name}", "tier=web", check=False
    )
    assert labelled.returncode == 0, labelled.stderr


def test_genuine_collector_with_odd_quantities_and_watched_files_passes_enforcement(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path, policy_pci: None
) -> None:
    """The API server rewrites quantities ("0.5" -> "500m") and fills defaults; the
    exact-collector check must still recognise what the operator injected."""
    kube = running_operator.kube
    spec = file_spec(
        tmp_path / "t",
        enforcement="required",
        sidecar={
            "resources": {
                "requests": {"cpu": "0.5", "memory": "0.125Gi"},
                "limits": {"memory": "1024Mi"},
            }
        },
        sources={"configFiles": {"paths": ["/etc/app/settings.yaml"]}},
    )
    create_ready_policy(kube, operator_namespace, "pci", spec)
    body = pod_body(
        {
            "containers": [app(volumeMounts=[{"name": "settings", "mountPath": "/etc/app"}])],
            "volumes": [{"name": "settings", "configMap": {"name": "kube-root-ca.crt"}}],
        }
    )
    pod = admitted(kube, operator_namespace, body)
    collector = collector_of(pod)
    assert collector["resources"]["requests"]["cpu"] == "500m"  # rewritten by the API server
    assert {"name": "settings", "mountPath": "/etc/app", "readOnly": True} in collector[
        "volumeMounts"
    ]
