"""Continuous verification (docs/operator.md, "Continuous verification") against the rig's
real kube-apiserver: `auditlock verify-policies` runs as a process (then in-process) with
the chart's own least-privilege RBAC, verifies a policy's file:// trail (written by
`auditlock synth` with the policy's key) and writes the verdict into the policy's status;
the running operator keeps the TrailVerified condition through its own status writes and
exports the verdict on its metrics.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from auditlock.cli.main import main as cli_main
from auditlock.ledger.keys import private_pem
from tests.helpers.cli import cli
from tests.helpers.policies import condition, create_ready_policy, file_spec, wait_for
from tests.integration.chart_helpers import named, render
from tests.servers.auditlock_child import run_auditlock
from tests.servers.auditlock_operator import RunningOperator, remove_policy
from tests.servers.kube_controlplane import KubeControlPlane

POLICY = "verified"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_auditlock(*args, timeout=120)


def _verifier_kubeconfig(
    kube: KubeControlPlane, helm_path: Path, namespace: str, workdir: Path, name: str
) -> Path:
    """A kubeconfig for a ServiceAccount bound to exactly the chart's verify ClusterRole."""
    objects = render(helm_path, {"verify": {"schedule": "17 * * * *"}}, include_crds=False)
    role = named(objects, "ClusterRole", "-verify")
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespaced_service_account(
            namespace, {"metadata": {"name": "verifier"}}
        )
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": role["rules"]})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "verifier",
                              "namespace": namespace}],
            }
        )  # fmt: skip
    token = kube.service_account_token(namespace, "verifier")
    return kube.write_kubeconfig(workdir / "verifier.kubeconfig", token)


def _policy(kube: KubeControlPlane, namespace: str) -> dict[str, Any]:
    return kube.get_json(f"/apis/auditlock.io/v1alpha1/namespaces/{namespace}/auditpolicies/"
                         f"{POLICY}")  # fmt: skip


def _gauge(running: RunningOperator, name: str, namespace: str) -> float | None:
    value = running.thread.operator.metrics.get_sample_value(
        name, {"namespace": namespace, "policy": POLICY}
    )
    return None if value is None else float(value)


def test_verify_policies_writes_pass_then_the_first_finding_of_a_tampered_trail(
    running_operator: RunningOperator,
    operator_namespace: str,
    helm_path: Path,
    tmp_path: Path,
) -> None:
    kube, ns = running_operator.kube, operator_namespace
    trail = tmp_path / "trail"
    role = f"verify-{uuid.uuid4().hex[:6]}"
    create_ready_policy(kube, ns, POLICY, file_spec(trail))
    try:
        # Per-pod keys (the default): the policy's published key is the operator's root.
        assert running_operator.root is not None
        key = tmp_path / "ed25519.pem"
        key.write_bytes(private_pem(running_operator.root.private))
        # The trail, signed with that key (in-process: one interpreter start less).
        assert cli_main(["synth", "--store", f"file://{trail}", "--key", str(key),
                         "--streams", "1", "--events", "20", "--no-fsync"]) == 0  # fmt: skip
        kubeconfig = _verifier_kubeconfig(kube, helm_path, ns, tmp_path, role)

        passed = _run("verify-policies", "--kubeconfig", str(kubeconfig), "--namespace", ns)
        assert passed.returncode == 0, (passed.stdout, passed.stderr)
        assert passed.stdout.startswith(f"PASS: {ns}/{POLICY}: TrailIntact")
        policy = _policy(kube, ns)
        verified = condition(policy, "TrailVerified")
        assert (verified["status"], verified["reason"]) == ("True", "TrailIntact")
        assert "20 events" in verified["message"]
        status = policy["status"]
        assert status["verification"]["result"] == "PASS"
        assert status["lastVerified"] == status["verification"]["time"]
        wait_for("the PASS on the operator's metrics",
                 lambda: _gauge(running_operator, "auditlock_policy_trail_verified", ns) == 1.0,
                 10)  # fmt: skip

        # One byte of one stored event changed: verify's first finding becomes the message.
        (segment,) = trail.glob("streams/*/*/seg-*.jsonl")
        segment.chmod(0o644)
        data = segment.read_bytes()
        segment.write_bytes(data.replace(b'"action":"', b'"action":"X', 1))
        # The same command in this process (one interpreter start less): what it prints
        # and writes is what the CronJob's process above did.
        code, stdout, stderr = cli("verify-policies", "--kubeconfig", str(kubeconfig),
                                   "--namespace", ns, "--json")  # fmt: skip
        assert code == 1, (stdout, stderr)
        verdict = condition(_policy(kube, ns), "TrailVerified")
        assert verdict["status"] == "False"
        record = _policy(kube, ns)["status"]["verification"]
        assert record["result"] == "FAIL" and record["findings"] >= 1
        assert verdict["reason"] == record["reason"] and verdict["reason"][0].isupper()
        assert verdict["message"] == record["message"]
        assert "seg-" in verdict["message"] or "seq" in verdict["message"]
        assert f'"reason": "{record["reason"]}"' in stdout
        wait_for("the FAIL on the operator's metrics",
                 lambda: _gauge(running_operator, "auditlock_policy_trail_verified", ns) == 0.0,
                 10)  # fmt: skip
        assert _gauge(running_operator, "auditlock_policy_trail_findings", ns) == float(
            record["findings"]
        )

        # The operator rewrites status every refresh (2 s in the rig): the verdict stays.
        generation = _policy(kube, ns)["status"].get("podsSelected")
        time.sleep(3)
        after = _policy(kube, ns)
        assert condition(after, "TrailVerified")["status"] == "False"
        assert condition(after, "Ready")["status"] == "True"
        assert after["status"].get("podsSelected") == generation
    finally:
        remove_policy(kube, ns, POLICY)
        with kube.api_client() as api:
            rbac = client.RbacAuthorizationV1Api(api)
            for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
                with contextlib.suppress(client.exceptions.ApiException):
                    delete(role)
