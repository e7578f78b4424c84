"""The operator's scenarios against the rig's real API server, as plain functions.

Each runs twice: as admin, by tests/integration/test_operator_policies.py, and as the
chart's ServiceAccount through a recording proxy, by
tests/integration/test_chart_rbac.py, which proves the chart's RBAC suffices for them.
A scenario takes the fixtures its parameters name and asserts what the operator must do;
`run(name, request)` runs one with them.
"""

from __future__ import annotations

import base64
import inspect
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from auditlock.ledger.keys import Signer, generate
from auditlock.operator import names as n
from auditlock.operator.stream_ids import stream_id
from tests.helpers.certificates import ask, collector_running, pod_token, request_body
from tests.helpers.policies import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create_pod,
    create_policy,
    create_ready_policy,
    create_s3_secret,
    file_spec,
    get_policy,
    operator_metric,
    patch_policy,
    s3_spec,
    wait_condition,
    wait_for,
)
from tests.helpers.trail import stored_events
from tests.servers.auditlock_operator import RunningOperator, register_webhooks, unregister_webhooks
from tests.servers.seaweedfs import SeaweedFS

ALL: dict[str, Callable[..., None]] = {}


def scenario(function: Callable[..., None]) -> Callable[..., None]:
    ALL[function.__name__] = function
    return function


def run(name: str, request: pytest.FixtureRequest) -> None:
    """Run scenario `name` with the fixtures its parameters name."""
    function = ALL[name]
    function(**{p: request.getfixturevalue(p) for p in inspect.signature(function).parameters})


@scenario
def policy_on_locked_s3_is_ready_within_5s(
    running_operator: RunningOperator, operator_namespace: str, seaweedfs: SeaweedFS
) -> None:
    kube = running_operator.kube
    bucket = seaweedfs.make_bucket(object_lock=True)
    create_s3_secret(kube, operator_namespace, seaweedfs)
    began = time.monotonic()
    policy = create_ready_policy(
        kube, operator_namespace, "payments", s3_spec(seaweedfs, bucket), timeout=5
    )
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
    # Per-pod keys, the default: the policy names the operator's root key, which is
    # published beside the data under the lock, and its namespace holds no key Secret.
    fingerprint = status["keyFingerprint"]
    assert running_operator.root is not None and fingerprint == running_operator.root.key_id
    assert "keySecret" not in status
    stored = seaweedfs.client().get_object(Bucket=bucket, Key=f"trail/keys/{fingerprint}.pub")
    assert stored["Body"].read().startswith(b"-----BEGIN PUBLIC KEY-----")
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as no_secret:
            core.read_namespaced_secret(n.key_secret_name("payments"), operator_namespace)
        config_map = core.read_namespaced_config_map(
            n.config_map_name("payments"), operator_namespace
        )
    assert no_secret.value.status == 404
    assert config_map.metadata.owner_references[0].kind == "AuditPolicy"
    assert f"s3://{bucket}/trail" in config_map.data[n.CONFIG_FILE]


@scenario
def selected_pod_is_injected_and_others_untouched(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    policy = create_ready_policy(kube, operator_namespace, "files", file_spec(tmp_path / "trail"))
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
    # Per-pod keys, the default: a projected token to prove the pod, no key volume.
    assert n.VOLUME_KEY not in volumes
    token = volumes[n.VOLUME_CERTIFICATE_TOKEN]["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == n.CERTIFICATE_AUDIENCE
    assert volumes[n.VOLUME_CONFIG]["configMap"]["name"] == n.config_map_name("files")
    assert volumes[n.VOLUME_SPOOL]["emptyDir"]["sizeLimit"] == "256Mi"
    assert collector["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["metadata"]["annotations"][n.ANNOTATION_POLICY] == "files"
    assert (
        pod["metadata"]["annotations"][n.ANNOTATION_CONFIG_HASH] == (policy["status"]["configHash"])
    )
    # Its collector, once the kubelet reports it running, gets its key certified for the
    # pod's stream (the operator reviews the pod's token and reads the pod).
    collector_running(kube, pod)
    stream = stream_id("rig", operator_namespace, pod["metadata"]["name"])
    ca = ssl.create_default_context(cafile=str(kube.ca_path))
    status, answer = ask(running_operator.webhook_url, ca, pod_token(kube, pod),
                         request_body(Signer(generate()), stream))  # fmt: skip
    assert status == 201, answer

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


@scenario
def policy_update_raises_stale_pod_count(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    before = create_ready_policy(kube, operator_namespace, "stale", file_spec(tmp_path / "trail"))
    create_pod(kube, operator_namespace, {"app": "payments"})
    wait_for(
        "podsInjected == 1",
        lambda: get_policy(kube, operator_namespace, "stale")["status"].get("podsInjected") == 1,
    )
    assert get_policy(kube, operator_namespace, "stale")["status"]["podsStale"] == 0
    patch_policy(kube, operator_namespace, "stale", {"spec": {"retention": {"days": 8}}})

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


@scenario
def required_enforcement_refuses_pod_without_collector(
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


@scenario
def invalid_policies_are_refused_or_reported_and_others_still_served(
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
    create_ready_policy(kube, operator_namespace, "good", file_spec(tmp_path / "good"))


@scenario
def missing_credentials_secret_is_reported_then_retried(
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


@scenario
def selected_pods_without_a_collector_are_counted_and_named(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    before = create_pod(kube, operator_namespace, {"app": "payments"})["metadata"]["name"]
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    create_ready_policy(kube, operator_namespace, "honest", file_spec(tmp_path / "trail"))
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


@scenario
def delete_removes_owned_objects_and_keeps_the_data(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    kube = running_operator.kube
    trail = tmp_path / "trail"
    # A shared key: the policy owns its key Secret, which goes with it.
    policy = create_ready_policy(
        kube, operator_namespace, "gone", file_spec(trail, signing="shared")
    )
    key_object = trail / "keys" / f"{policy['status']['keyFingerprint']}.pub"
    assert key_object.exists()
    with kube.api_client() as api:
        secret = client.CoreV1Api(api).read_namespaced_secret(
            n.key_secret_name("gone"), operator_namespace
        )
    assert secret.metadata.owner_references[0].name == "gone"
    # The private key is nowhere in the policy object.
    private = base64.b64decode(secret.data[n.KEY_FILE]).decode()
    assert private.splitlines()[1] not in str(policy)
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


@scenario
def key_rotation_is_signed_by_the_old_key(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    from auditlock import sinks
    from auditlock.ledger import load_public_key
    from auditlock.ledger.rotation import decode_rotation

    kube = running_operator.kube
    trail = tmp_path / "trail"
    create_policy(kube, operator_namespace, "rot", file_spec(trail, signing="shared"))
    old = wait_condition(kube, operator_namespace, "rot", "Ready", "True")["status"]
    rotate = {"metadata": {"annotations": {n.ANNOTATION_ROTATE_KEY: "2026-11-29"}}}
    patch_policy(kube, operator_namespace, "rot", rotate)

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


@scenario
def exec_secret_read_and_rolebinding_become_ledger_events(
    running_operator: RunningOperator,
    operator_namespace: str,
    operator_collector: Path,
    tmp_path: Path,
) -> None:
    kube = running_operator.kube
    create_ready_policy(kube, operator_namespace, "capture", file_spec(tmp_path / "app-trail"))
    pod = create_pod(kube, operator_namespace, {"app": "payments"})
    pod_name = pod["metadata"]["name"]
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(
            operator_namespace, {"metadata": {"name": "db"}, "stringData": {"password": "s3cr3t"}}
        )
        core.read_namespaced_secret("db", operator_namespace)
        client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
            operator_namespace,
            {
                "metadata": {"name": "viewers"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "view",
                },
                "subjects": [
                    {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}
                ],
            },
        )
    # The pod is Pending (no kubelet): the exec request is refused, and still audited.
    kube.kubectl("exec", "-n", operator_namespace, pod_name, "--", "true", check=False)

    def captured() -> dict[str, dict[str, Any]] | None:
        found: dict[str, dict[str, Any]] = {}
        for event in stored_events(operator_collector):
            target = event.get("target", {})
            if target.get("namespace") != operator_namespace:
                continue
            if event["action"] == "exec" and target.get("name") == pod_name:
                found["exec"] = event
            # The operator reads Secrets too (its policy's key, a written one to hash it).
            secret = target.get("resource") == "secrets" and target.get("name") == "db"
            if secret and event["action"] == "get":
                found["secret-read"] = event
            if target.get("resource") == "rolebindings" and event["action"] == "create":
                found["rolebinding"] = event
        return found if len(found) == 3 else None

    found = wait_for("exec, Secret read and RoleBinding in the operator's ledger", captured, 30)
    assert found["exec"]["category"] == "access"
    assert found["exec"]["target"]["resource"] == "pods/exec"
    assert found["exec"]["actor"] == {"kind": "user", "name": "admin", "ip": "127.0.0.1"}
    assert found["secret-read"]["category"] == "access"
    assert found["secret-read"]["outcome"] == "success"
    assert found["secret-read"]["target"]["name"] == "db"
    assert found["rolebinding"]["category"] == "authorization"
    assert found["rolebinding"]["target"]["name"] == "viewers"
    # The Secret's value never reaches the ledger.
    assert b"s3cr3t" not in b"".join(p.read_bytes() for p in operator_collector.rglob("*.jsonl"))


@scenario
def alert_rule_is_validated_evaluated_and_published(
    running_operator: RunningOperator, operator_namespace: str, tmp_path: Path
) -> None:
    """An AuditAlertRule becomes Ready (its status written by the operator), its spec
    reaches the namespace's collectors as alerts.json in the policy's ConfigMap, and its
    removal takes it out again (docs/alerts.md)."""
    import json

    kube = running_operator.kube
    create_ready_policy(kube, operator_namespace, "alerting", file_spec(tmp_path / "trail"))
    rule = {
        "apiVersion": "auditlock.io/v1alpha1",
        "kind": "AuditAlertRule",
        "metadata": {"name": "exports"},
        "spec": {
            "summary": "{{ actor.name }} exported {{ target.name }}",
            "match": [{"field": "action", "equals": "export"}],
        },
    }
    with kube.api_client() as api:
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            "auditlock.io", "v1alpha1", operator_namespace, "auditalertrules", rule
        )

        def ready() -> bool:
            got = custom.get_namespaced_custom_object(
                "auditlock.io", "v1alpha1", operator_namespace, "auditalertrules", "exports"
            )
            conditions = (got.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for("the rule to be Ready", ready, 20)
        core = client.CoreV1Api(api)

        def published(names: list[str]) -> bool:
            data = core.read_namespaced_config_map(
                n.config_map_name("alerting"), operator_namespace
            ).data
            rules = json.loads((data or {}).get(n.ALERT_RULES_FILE) or '{"rules": []}')["rules"]
            return [r["name"] for r in rules] == names

        wait_for("alerts.json with the rule", lambda: published(["exports"]), 20)
        custom.delete_namespaced_custom_object(
            "auditlock.io", "v1alpha1", operator_namespace, "auditalertrules", "exports"
        )
        wait_for("alerts.json without the rule", lambda: published([]), 20)
