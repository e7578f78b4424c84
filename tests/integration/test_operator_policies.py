"""The operator against the real kube-apiserver: status, injection, enforcement, schema.

The scenarios that also run as the chart's ServiceAccount (test_chart_rbac.py) are in
tests/helpers/operator_scenarios.py; `test_scenario_as_admin` runs each of them as admin.

The operator runs in-process (kopf + TLS webhooks on 127.0.0.1); the API server calls
its webhooks through Mutating/ValidatingWebhookConfigurations with a url clientConfig.
Pods stay Pending (no scheduler or kubelet in the rig): tests read the admitted pod.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from kubernetes import client

from auditlock.operator import names as n
from tests.helpers import operator_scenarios as scenarios
from tests.helpers.events import small
from tests.helpers.policies import (
    condition,
    create_pod,
    create_policy,
    create_ready_policy,
    create_s3_secret,
    file_spec,
    get_policy,
    patch_policy,
    s3_spec,
    wait_condition,
    wait_for,
)
from tests.servers.auditlock_operator import RunningOperator
from tests.servers.seaweedfs import SeaweedFS


@pytest.mark.parametrize("name", scenarios.ALL)
def test_scenario_as_admin(name: str, request: pytest.FixtureRequest) -> None:
    scenarios.run(name, request)


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
    create_ready_policy(kube, operator_namespace, "shown", file_spec(tmp_path / "trail"))
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
    from auditlock.ledger import StreamWriter, validate_event

    kube = running_operator.kube
    trail = tmp_path / "trail"
    policy = create_ready_policy(kube, operator_namespace, "ckpt", file_spec(trail))
    assert "lastCheckpoint" not in policy["status"]
    # A writer of this policy stores a signed segment and checkpoint; with per-pod keys
    # (the default) the operator's root key is one it trusts for the policy.
    key = running_operator.root
    assert key is not None
    destination = sinks.open(f"file://{trail}")
    retention = sinks.RetentionSpec(period=timedelta(days=7))

    def write(stream: str) -> None:
        writer = StreamWriter.resume(destination, stream, key, retention=retention)
        writer.append(
            validate_event(
                small(
                    time="2026-11-29T15:00:00Z",
                    target={"resource": "orders"},
                    source={"namespace": operator_namespace},
                )
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
    create_ready_policy(kube, operator_namespace, "kept", file_spec(tmp_path / "trail"))
    invalid = {"selector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}
    patch_policy(kube, operator_namespace, "kept", {"spec": invalid})
    policy = wait_condition(
        kube, operator_namespace, "kept", "Ready", "False", reason="InvalidSpec"
    )
    injecting = condition(policy, "Injecting")
    assert (injecting["status"], injecting["reason"]) == ("True", "LastValidSpec")
    pod = create_pod(kube, operator_namespace, {"app": "payments"})
    assert pod["metadata"]["annotations"][n.ANNOTATION_POLICY] == "kept"
