"""The operator against the real kube-apiserver: status, injection, enforcement, schema.

The operator runs in-process (kopf + TLS webhooks on 127.0.0.1); the API server calls
its webhooks through Mutating/ValidatingWebhookConfigurations with a url clientConfig.
Pods stay Pending (no scheduler or kubelet in the rig): tests read the admitted pod.
"""

from __future__ import annotations

import base64
import ssl
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from auditlock.operator import names as n
from tests.servers.auditlock_operator import RunningOperator, register_webhooks, unregister_webhooks
from tests.servers.kube_controlplane import KubeControlPlane
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.sidecar import metric_value

GROUP, VERSION, PLURAL = "auditlock.io", "v1alpha1", "auditpolicies"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def create_policy(kube: KubeControlPlane, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AuditPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    with kube.api_client() as api:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )


def get_policy(kube: KubeControlPlane, namespace: str, name: str) -> dict[str, Any]:
    with kube.api_client() as api:
        result: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return result


def condition(policy: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (policy.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_condition(
    kube: KubeControlPlane,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    timeout: float = 10.0,
    reason: str | None = None,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        policy = get_policy(kube, namespace, name)
        cond = condition(policy, kind)
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return policy
        return None

    return wait_for(f"{name} {kind}={status} ({reason})", probe, timeout)


def create_pod(
    kube: KubeControlPlane,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"app-{uuid.uuid4().hex[:8]}",
            "labels": labels,
            "annotations": annotations or {},
        },
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
    with kube.api_client() as api:
        created = client.CoreV1Api(api).create_namespaced_pod(namespace, body)
        result: dict[str, Any] = api.sanitize_for_serialization(created)
        return result


def operator_metric(running: RunningOperator, name: str, **labels: str) -> float:
    """A metric from the operator's /metrics, as Prometheus scrapes it."""
    context = ssl.create_default_context(cafile=str(running.kube.ca_path))
    with urllib.request.urlopen(f"{running.webhook_url}/metrics", context=context) as answer:
        return metric_value(answer.read().decode(), name, **labels)


def s3_spec(seaweedfs: SeaweedFS, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": {"app": "payments"}},
        "destination": {
            "s3": {
                "bucket": bucket,
                "prefix": "trail",
                "endpoint": seaweedfs.endpoint,
                "region": seaweedfs.region,
                "credentialsSecret": {"name": "s3-credentials"},
            }
        },
        "retention": {"days": 1, "mode": "Locked"},
        **extra,
    }


def file_spec(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": {"app": "payments"}},
        "destination": {"file": {"path": str(path)}},
        "retention": {"days": 7},
        **extra,
    }


def create_s3_secret(kube: KubeControlPlane, namespace: str, seaweedfs: SeaweedFS) -> None:
    data = {
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "s3-credentials"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            },
        )


def test_policy_on_locked_s3_is_ready_within_5s(
    running_operator: RunningOperator, operator_namespace: str, seaweedfs: SeaweedFS
) -> None:
    kube = running_operator.kube
    bucket = seaweedfs.make_bucket(object_lock=True)
    create_s3_secret(kube, operator_namespace, seaweedfs)
    began = time.monotonic()
    create_policy(kube, operator_namespace, "payments", s3_spec(seaweedfs, bucket))
    policy = wait_condition(kube, operator_namespace, "payments", "Ready", "True", timeout=5)
    took = time.monotonic() - began
    assert took <= 5.0
    status = policy["status"]
    assert status["observedGeneration"] == policy["metadata"]["generation"]
    locked = condition(policy, "DestinationLocked")
    assert (locked["status"], locked["reason"]) == ("True", "RetentionLocked")
    assert condition(policy, "Injecting")["status"] == "True"
    for cond in status["conditions"]:
        assert cond["reason"] and cond["message"] and cond["lastTransitionTime"]
    assert status["destination"] == f"s3://{bucket}/trail"
    assert status["retention"] == "1d Locked"
    assert status["podsInjected"] == 0
    fingerprint = status["keyFingerprint"]
    assert len(fingerprint) == 64
    # The public key is published beside the data, under the lock.
    stored = seaweedfs.client().get_object(Bucket=bucket, Key=f"trail/keys/{fingerprint}.pub")
    assert stored["Body"].read().startswith(b"-----BEGIN PUBLIC KEY-----")
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        secret = core.read_namespaced_secret(n.key_secret_name("payments"), operator_namespace)
        config_map = core.read_namespaced_config_map(
            n.config_map_name("payments"), operator_namespace
        )
    assert secret.metadata.owner_references[0].name == "payments"
    assert n.KEY_FILE in secret.data
    assert config_map.metadata.owner_references[0].kind == "AuditPolicy"
    assert f"s3://{bucket}/trail" in config_map.data[n.CONFIG_FILE]
    # The private key is nowhere in the policy object.
    private = base64.b64decode(secret.data[n.KEY_FILE]).decode()
    assert private.splitlines()[1] not in str(policy)


def test_bucket_without_object_lock_reports_destination_locked_false(
    running_operator: RunningOperator, operator_namespace: str, seaweedfs: SeaweedFS
) -> None:
    kube = running_operator.kube
    bucket = seaweedfs.make_bucket(object_lock=False)
    create_s3_secret(kube, operator_namespace, seaweedfs)
    create_policy(kube, operator_namespace, "nolock", s3_spec(seaweedfs, bucket))
    policy = wait_condition(kube, operator_namespace, "nolock", "DestinationLocked", "False")
    locked = condition(policy, "DestinationLocked")
    assert locked["reason"] == "RetentionLockMissing"
    assert "lock" in locked["message"].lower()
    assert condition(policy, "Ready")["status"] == "False"


def test_selected_pod_is_injected_and_others_untouched(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    create_policy(kube, operator_namespace, "files", file_spec(tmp_path / "trail"))
    policy = wait_condition(kube, operator_namespace, "files", "Ready", "True")
    assert condition(policy, "DestinationLocked")["reason"] == "NotWorm"

    pod = create_pod(kube, operator_namespace, {"app": "payments"})
    native = kube.version_info >= (1, 29)
    containers = pod["spec"]["initContainers"] if native else pod["spec"]["containers"]
    collector = next(c for c in containers if c["name"] == n.COLLECTOR_CONTAINER)
    if native:
        assert collector["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"] if native else True
    app = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
    assert not app.get("volumeMounts") or all(
        m["name"] != n.VOLUME_KEY for m in app["volumeMounts"]
    )
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[n.VOLUME_KEY]["secret"]["secretName"] == n.key_secret_name("files")
    assert volumes[n.VOLUME_CONFIG]["configMap"]["name"] == n.config_map_name("files")
    assert volumes[n.VOLUME_SPOOL]["emptyDir"]["sizeLimit"] == "256Mi"
    assert collector["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["metadata"]["annotations"][n.ANNOTATION_POLICY] == "files"
    assert (
        pod["metadata"]["annotations"][n.ANNOTATION_CONFIG_HASH] == (policy["status"]["configHash"])
    )

    other = create_pod(kube, operator_namespace, {"app": "other"})
    assert not other["spec"].get("initContainers")
    assert [c["name"] for c in other["spec"]["containers"]] == ["app"]
    assert n.ANNOTATION_POLICY not in (other["metadata"].get("annotations") or {})

    opted_out = create_pod(
        kube, operator_namespace, {"app": "payments"}, {n.ANNOTATION_INJECT: "false"}
    )
    assert not opted_out["spec"].get("initContainers")

    # The pod count reaches status (PODS column).
    wait_for(
        "podsInjected == 1",
        lambda: get_policy(kube, operator_namespace, "files")["status"].get("podsInjected") == 1,
    )


def test_policy_update_raises_stale_pod_count(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    create_policy(kube, operator_namespace, "stale", file_spec(tmp_path / "trail"))
    before = wait_condition(kube, operator_namespace, "stale", "Ready", "True")
    create_pod(kube, operator_namespace, {"app": "payments"})
    wait_for(
        "podsInjected == 1",
        lambda: get_policy(kube, operator_namespace, "stale")["status"].get("podsInjected") == 1,
    )
    assert get_policy(kube, operator_namespace, "stale")["status"]["podsStale"] == 0
    with kube.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            operator_namespace,
            PLURAL,
            "stale",
            {"spec": {"retention": {"days": 8}}},
        )

    def stale_counted() -> dict[str, Any] | None:
        policy = get_policy(kube, operator_namespace, "stale")
        status = policy["status"]
        if status.get("observedGeneration") == 2 and status.get("podsStale") == 1:
            return policy
        return None

    after = wait_for("podsStale == 1", stale_counted)
    assert after["status"]["configHash"] != before["status"]["configHash"]
    assert after["status"]["retention"] == "8d Locked"
    assert "1 run an older configuration" in condition(after, "Injecting")["message"]


def test_required_enforcement_refuses_pod_without_collector(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    create_policy(
        kube, operator_namespace, "pci", file_spec(tmp_path / "t", enforcement="required")
    )
    wait_condition(kube, operator_namespace, "pci", "Ready", "True")
    # The fail-closed webhook selects this namespace through the operator's label.
    with kube.api_client() as api:
        ns = client.CoreV1Api(api).read_namespace(operator_namespace)
    assert ns.metadata.labels.get("auditlock.io/enforcement") == "required"
    # Opt-out is ignored under enforcement: required.
    pod = create_pod(kube, operator_namespace, {"app": "payments"}, {n.ANNOTATION_INJECT: "false"})
    assert pod["metadata"]["annotations"][n.ANNOTATION_POLICY] == "pci"
    # Without the injection webhook, the enforcement webhook alone refuses the pod.
    unregister_webhooks(kube)
    try:
        from auditlock.operator.webhook_config import webhook_configurations
        from tests.servers.auditlock_operator import TEST_NAMESPACE_LABEL

        _, validating = webhook_configurations(
            "auditlock-test",
            kube.ca_pem,
            url=running_operator.webhook_url,
            namespace_labels=TEST_NAMESPACE_LABEL,
        )
        with kube.api_client() as api:
            client.AdmissionregistrationV1Api(api).create_validating_webhook_configuration(
                validating
            )
        with pytest.raises(ApiException) as refused:
            create_pod(kube, operator_namespace, {"app": "payments"})
        assert refused.value.status == 403
        assert "AuditPolicy pci (enforcement: required)" in str(refused.value.body)
        # A pod the policy does not select is still admitted.
        create_pod(kube, operator_namespace, {"app": "batch"})
    finally:
        register_webhooks(kube, running_operator.webhook_url)


def test_invalid_policies_are_refused_or_reported_and_others_still_served(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    # The schema refuses what it can express.
    with pytest.raises(ApiException) as zero:
        create_policy(kube, operator_namespace, "zero", file_spec(tmp_path, retention={"days": 0}))
    assert zero.value.status == 422 and "spec.retention.days" in str(zero.value.body)
    two = file_spec(tmp_path)
    two["destination"]["s3"] = {"bucket": "abc"}
    with pytest.raises(ApiException) as both:
        create_policy(kube, operator_namespace, "two", two)
    assert both.value.status == 422 and "spec.destination" in str(both.value.body)
    # What only the model knows is reported in status, and retried only on change.
    bad = file_spec(tmp_path, selector={"matchExpressions": [{"key": "a", "operator": "In"}]})
    create_policy(kube, operator_namespace, "bad", bad)
    policy = wait_condition(kube, operator_namespace, "bad", "Ready", "False", reason="InvalidSpec")
    message = condition(policy, "Ready")["message"]
    assert "spec.selector.matchExpressions.0" in message and "needs at least one value" in message
    # The operator keeps serving other policies.
    create_policy(kube, operator_namespace, "good", file_spec(tmp_path / "good"))
    wait_condition(kube, operator_namespace, "good", "Ready", "True")


def test_missing_credentials_secret_is_reported_then_retried(
    running_operator: RunningOperator, operator_namespace: str, seaweedfs: SeaweedFS
) -> None:
    kube = running_operator.kube
    bucket = seaweedfs.make_bucket(object_lock=True)
    create_policy(kube, operator_namespace, "creds", s3_spec(seaweedfs, bucket))
    policy = wait_condition(
        kube, operator_namespace, "creds", "Ready", "False", reason="CredentialsSecretMissing"
    )
    assert "Secret s3-credentials" in condition(policy, "Ready")["message"]
    create_s3_secret(kube, operator_namespace, seaweedfs)
    wait_condition(kube, operator_namespace, "creds", "Ready", "True", timeout=20)


def test_missing_bucket_is_reported_in_one_sentence(
    running_operator: RunningOperator, operator_namespace: str, seaweedfs: SeaweedFS
) -> None:
    kube = running_operator.kube
    create_s3_secret(kube, operator_namespace, seaweedfs)
    create_policy(kube, operator_namespace, "nobucket", s3_spec(seaweedfs, "no-such-bucket-x1"))
    policy = wait_condition(kube, operator_namespace, "nobucket", "Ready", "False")
    message = condition(policy, "Ready")["message"]
    assert "no-such-bucket-x1" in message


def test_kubectl_get_auditpolicies_prints_the_columns(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    create_policy(kube, operator_namespace, "shown", file_spec(tmp_path / "trail"))
    wait_condition(kube, operator_namespace, "shown", "Ready", "True")
    out = kube.kubectl("get", "auditpolicies", "-n", operator_namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == [
        "NAME", "READY", "PODS", "UNAUDITED", "DESTINATION", "RETENTION", "LOCKED",
        "LAST-CHECKPOINT", "AGE",
    ]  # fmt: skip
    cells = row.split()
    assert cells[:4] == ["shown", "True", "0", "0"]
    assert cells[4] == f"file://{tmp_path / 'trail'}"
    assert cells[5:8] == ["7d", "Locked", "False"]
    explained = kube.kubectl("explain", "auditpolicy.spec.retention.days").stdout
    assert "Retention period in days" in explained


def test_selected_pods_without_a_collector_are_counted_and_named(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    before = create_pod(kube, operator_namespace, {"app": "payments"})["metadata"]["name"]
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    create_policy(kube, operator_namespace, "honest", file_spec(tmp_path / "trail"))
    wait_condition(kube, operator_namespace, "honest", "Ready", "True")
    injected = create_pod(kube, operator_namespace, {"app": "payments"})
    assert injected["metadata"]["labels"][n.LABEL_POLICY] == "honest"
    opted = create_pod(
        kube, operator_namespace, {"app": "payments"}, {n.ANNOTATION_INJECT: "false"}
    )["metadata"]["name"]
    # The injection webhook not called (an outage of a fail-open webhook looks the same).
    unregister_webhooks(kube)
    try:
        missed = create_pod(kube, operator_namespace, {"app": "payments"})["metadata"]["name"]
    finally:
        register_webhooks(kube, running_operator.webhook_url)
    create_pod(kube, operator_namespace, {"app": "other"})  # not selected

    def counted() -> dict[str, Any] | None:
        policy = get_policy(kube, operator_namespace, "honest")
        status = policy["status"]
        if (status.get("podsSelected"), status.get("podsUnaudited")) == (4, 3):
            return policy
        return None

    policy = wait_for("podsSelected 4, podsUnaudited 3", counted)
    assert policy["status"]["podsInjected"] == 1
    audited = condition(policy, "AllPodsAudited")
    assert (audited["status"], audited["reason"]) == ("False", "PodsWithoutCollector")
    message = audited["message"]
    assert message.startswith("3 of 4 selected pod(s) run without a collector")
    assert f"{before} (created before the policy)" in message
    assert f"{opted} (opted out)" in message
    assert f"{missed} (admitted without the collector)" in message
    assert injected["metadata"]["name"] not in message
    # The same counts for Prometheus (the chart's AuditlockPodsWithoutCollector rule).
    who = {"namespace": operator_namespace, "policy": "honest"}
    assert operator_metric(running_operator, "auditlock_operator_policy_pods",
                           state="unaudited", **who) == 3  # fmt: skip
    assert operator_metric(running_operator, "auditlock_operator_policy_pods",
                           state="selected", **who) == 4  # fmt: skip
    assert operator_metric(running_operator, "auditlock_operator_policy_condition",
                           condition="AllPodsAudited", status="false",
                           reason="PodsWithoutCollector", **who) == 1  # fmt: skip

    out = kube.kubectl("get", "auditpolicies", "-n", operator_namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "READY", "PODS", "UNAUDITED"]
    assert row.split()[:4] == ["honest", "True", "1", "3"]
    wide = kube.kubectl("get", "auditpolicies", "-n", operator_namespace, "-o", "wide").stdout
    columns = wide.splitlines()[0].split()
    assert wide.splitlines()[1].split()[columns.index("SELECTED")] == "4"

    # The unaudited pods go (pods without the policy label): the count follows at once,
    # well before the periodic refresh would matter.
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        for name in (before, opted, missed):
            core.delete_namespaced_pod(name, operator_namespace, grace_period_seconds=0)

    def all_audited() -> dict[str, Any] | None:
        policy = get_policy(kube, operator_namespace, "honest")
        return policy if condition(policy, "AllPodsAudited").get("status") == "True" else None

    policy = wait_for("AllPodsAudited=True", all_audited)
    assert policy["status"]["podsUnaudited"] == 0
    assert policy["status"]["podsSelected"] == 1
    assert condition(policy, "AllPodsAudited")["reason"] == "AllSelectedPodsAudited"
    assert operator_metric(running_operator, "auditlock_operator_policy_pods",
                           state="unaudited", **who) == 0  # fmt: skip


def test_delete_removes_owned_objects_and_keeps_the_data(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    trail = tmp_path / "trail"
    create_policy(kube, operator_namespace, "gone", file_spec(trail))
    policy = wait_condition(kube, operator_namespace, "gone", "Ready", "True")
    key_object = trail / "keys" / f"{policy['status']['keyFingerprint']}.pub"
    assert key_object.exists()
    with kube.api_client() as api:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, operator_namespace, PLURAL, "gone"
        )
        core = client.CoreV1Api(api)

        def gone() -> bool:
            for read in (
                lambda: client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, operator_namespace, PLURAL, "gone"
                ),
                lambda: core.read_namespaced_config_map(
                    n.config_map_name("gone"), operator_namespace
                ),
                lambda: core.read_namespaced_secret(n.key_secret_name("gone"), operator_namespace),
            ):
                try:
                    read()
                except ApiException as exc:
                    if exc.status == 404:
                        continue
                    raise
                return False
            return True

        wait_for("policy, ConfigMap and key Secret deleted", gone)
    assert key_object.exists()


def test_unreachable_destination_is_reported_and_retried(
    running_operator: RunningOperator, operator_namespace: str, seaweedfs: SeaweedFS
) -> None:
    kube = running_operator.kube
    create_s3_secret(kube, operator_namespace, seaweedfs)
    spec = s3_spec(seaweedfs, "some-bucket")
    spec["destination"]["s3"]["endpoint"] = "http://127.0.0.1:9"  # discard port: nobody home
    create_policy(kube, operator_namespace, "down", spec)
    policy = wait_condition(
        kube, operator_namespace, "down", "Ready", "False", reason="DestinationUnreachable"
    )
    assert "could not be read" in condition(policy, "Ready")["message"]
    assert condition(policy, "DestinationLocked")["status"] == "False"
    # kopf retries with backoff: the failure is reported as a Kubernetes Event too.
    with kube.api_client() as api:

        def warned() -> bool:
            events = client.CoreV1Api(api).list_namespaced_event(operator_namespace).items
            return any(
                e.involved_object.name == "down"
                and e.type == "Warning"
                and e.reason == "DestinationUnreachable"
                for e in events
            )

        wait_for("a Warning Event naming the reason", warned, timeout=15)


def test_last_checkpoint_is_read_from_the_destination(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    from auditlock import sinks
    from auditlock.ledger import StreamWriter, load_private_key, validate_event

    kube = running_operator.kube
    trail = tmp_path / "trail"
    create_policy(kube, operator_namespace, "ckpt", file_spec(trail))
    policy = wait_condition(kube, operator_namespace, "ckpt", "Ready", "True")
    assert "lastCheckpoint" not in policy["status"]
    # A collector of this policy writes a signed segment and checkpoint with its key.
    with kube.api_client() as api:
        secret = client.CoreV1Api(api).read_namespaced_secret(
            n.key_secret_name("ckpt"), operator_namespace
        )
    key = load_private_key(base64.b64decode(secret.data[n.KEY_FILE]))
    destination = sinks.open(f"file://{trail}")
    retention = sinks.RetentionSpec(period=timedelta(days=7))

    def write(stream: str) -> None:
        writer = StreamWriter.resume(destination, stream, key, retention=retention)
        writer.append(
            validate_event(
                {
                    "id": "e-1",
                    "time": "2026-11-29T15:00:00Z",
                    "category": "access",
                    "action": "get",
                    "outcome": "success",
                    "actor": {"kind": "user", "name": "alice"},
                    "target": {"resource": "orders"},
                    "source": {"namespace": operator_namespace},
                }
            )
        )
        writer.store(writer.seal())

    write(f"rig_{operator_namespace}_api-1")  # the stream id this cluster's collector has

    def checkpoint_seen() -> str | None:
        status = get_policy(kube, operator_namespace, "ckpt")["status"]
        return status.get("lastCheckpoint")

    seen = wait_for("status.lastCheckpoint", checkpoint_seen, timeout=15)
    assert seen.startswith(time.strftime("%Y-%m-%dT", time.gmtime()))
    # Newer checkpoints of another cluster's and another namespace's streams sharing the
    # prefix say nothing about this policy: LAST-CHECKPOINT stays its own.
    time.sleep(1.1)
    write(f"other-cluster_{operator_namespace}_api-1")
    write("rig_other-namespace_api-1")
    time.sleep(3 * 2.0)  # three refreshes (and checkpoint scans) of the fixture's operator
    assert checkpoint_seen() == seen
    row = kube.kubectl("get", "auditpolicy", "ckpt", "-n", operator_namespace).stdout
    assert "<none>" not in row.splitlines()[1]


def test_invalid_edit_keeps_the_last_valid_spec_in_force(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    create_policy(kube, operator_namespace, "kept", file_spec(tmp_path / "trail"))
    wait_condition(kube, operator_namespace, "kept", "Ready", "True")
    with kube.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            operator_namespace,
            PLURAL,
            "kept",
            {"spec": {"selector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}},
        )
    policy = wait_condition(
        kube, operator_namespace, "kept", "Ready", "False", reason="InvalidSpec"
    )
    injecting = condition(policy, "Injecting")
    assert (injecting["status"], injecting["reason"]) == ("True", "LastValidSpec")
    pod = create_pod(kube, operator_namespace, {"app": "payments"})
    assert pod["metadata"]["annotations"][n.ANNOTATION_POLICY] == "kept"


def test_key_rotation_is_signed_by_the_old_key(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    from auditlock import sinks
    from auditlock.ledger import load_public_key
    from auditlock.ledger.rotation import decode_rotation

    kube = running_operator.kube
    trail = tmp_path / "trail"
    create_policy(kube, operator_namespace, "rot", file_spec(trail))
    old = wait_condition(kube, operator_namespace, "rot", "Ready", "True")["status"]
    with kube.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, operator_namespace, PLURAL, "rot",
            {"metadata": {"annotations": {n.ANNOTATION_ROTATE_KEY: "2026-11-29"}}},
        )  # fmt: skip

    def rotated() -> str | None:
        key = get_policy(kube, operator_namespace, "rot")["status"]["keyFingerprint"]
        return key if key != old["keyFingerprint"] else None

    new_key = wait_for("a new key fingerprint", rotated, timeout=15)
    destination = sinks.open(f"file://{trail}")
    record = decode_rotation(
        destination.get(f"keys/rotations/{old['keyFingerprint']}-{new_key}.json")
    )
    record.verify_with(load_public_key(destination.get(f"keys/{old['keyFingerprint']}.pub")))
    assert record.new_key_id == new_key
    assert destination.get(f"keys/{new_key}.pub").startswith(b"-----BEGIN PUBLIC KEY")
    with kube.api_client() as api:
        secret = client.CoreV1Api(api).read_namespaced_secret(
            n.key_secret_name("rot"), operator_namespace
        )
    assert secret.metadata.annotations[n.ANNOTATION_ROTATED_FOR] == "2026-11-29"
    # The same annotation value does not rotate again.
    time.sleep(3)
    status = get_policy(kube, operator_namespace, "rot")["status"]
    assert status["keyFingerprint"] == new_key
