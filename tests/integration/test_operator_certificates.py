"""The operator certifies a collector's per-pod key only for the pod its token proves
(docs/operator.md, "Per-pod keys"): real kube-apiserver TokenReview of pod-bound
projected tokens, the operator's real HTTPS server, the certificate stored in the
policy's file:// destination, and `verify --public-key ROOT` following it."""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from auditlock import sinks
from auditlock.ledger.certificate import Certificate, decode_certificate
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.synth import synthetic_events
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.writer import StreamWriter
from auditlock.operator.certificates import AUDIENCE, PATH
from auditlock.operator.names import key_secret_name
from auditlock.operator.stream_ids import stream_id
from tests.helpers.certificates import ask, collector_running, pod_token, request_body
from tests.helpers.http_intake import event, post
from tests.helpers.policies import (
    create_pod,
    create_policy,
    file_spec,
    operator_metric,
    wait_condition,
)
from tests.servers.auditlock_operator import RunningOperator, post_pod_review, start_operator
from tests.servers.kube_controlplane import KubeControlPlane
from tests.servers.sidecar import make_config, sidecar_process, terminate_promptly, wait_for

CLUSTER = "rig"


@dataclass
class Rig:
    kube: KubeControlPlane
    operator: RunningOperator
    root: Signer
    namespace: str
    store: Path
    ca: ssl.SSLContext

    def pod(self, labels: dict[str, str] | None = None) -> dict[str, object]:
        """A pod whose collector the kubelet reports running."""
        pod = create_pod(self.kube, self.namespace, labels or {"app": "payments"})
        collector_running(self.kube, pod)
        return pod

    def stream(self, pod: dict[str, object]) -> str:
        return stream_id(CLUSTER, self.namespace, pod["metadata"]["name"])  # type: ignore[index]


@pytest.fixture(scope="module")
def rig(
    auditpolicy_crd: KubeControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    kube = auditpolicy_crd
    root = Signer(generate())
    running = start_operator(
        kube, register=False, audit_intake=False, cluster=CLUSTER, root_key=root
    )
    namespace = kube.create_namespace()
    store = tmp_path_factory.mktemp("certs") / "store"
    create_policy(kube, namespace, "trail", file_spec(store))
    wait_condition(kube, namespace, "trail", "Ready", "True", timeout=30)
    ca = ssl.create_default_context(cafile=str(kube.ca_path))
    try:
        yield Rig(kube, running, root, namespace, store, ca)
    finally:
        running.stop()
        kube.delete_namespace(namespace)


def test_a_pod_gets_its_key_certified_and_verify_follows_it(rig: Rig) -> None:
    pod = rig.pod()
    key = Signer(generate())
    status, answer = ask(
        rig.operator.webhook_url,
        rig.ca,
        pod_token(rig.kube, pod),
        request_body(key, rig.stream(pod)),
    )
    assert status == 201, answer
    dest = sinks.open(f"file://{rig.store}")
    stored = dest.get(answer["name"])
    assert stored == answer["certificate"].encode()
    cert = decode_certificate(stored)
    meta = pod["metadata"]
    assert (cert.subject.pod, cert.subject.pod_uid) == (meta["name"], meta["uid"])  # type: ignore[index]
    assert cert.subject.stream == rig.stream(pod) and cert.issuer_key_id == rig.root.key_id
    # The collector writes with that key; a foreign key writes a neighbour's stream.
    for signer, stream in ((key, rig.stream(pod)), (Signer(generate()), rig.stream(rig.pod()))):
        writer = StreamWriter.resume(dest, stream, signer, retention=None)
        for _, synthetic in synthetic_events(stream, 3):
            writer.append(synthetic)
        writer.store(writer.seal())
        writer.store(writer.close())
    report = verify(dest, VerifyOptions(public_keys=[rig.root.public], check_retention=False))
    by_stream = {f.stream for f in report.findings if f.code == "uncertified-key"}
    assert by_stream and rig.stream(pod) not in by_stream, report.findings
    assert {f.code for f in report.findings} == {"uncertified-key"}
    assert operator_metric(rig.operator, "auditlock_operator_certificate_requests_total",
                           outcome="issued") >= 1  # fmt: skip


def test_only_the_pod_the_token_proves_is_certified(rig: Rig) -> None:
    url, pod, other = rig.operator.webhook_url, rig.pod(), rig.pod()
    body = request_body(Signer(generate()), rig.stream(pod))
    refused = [
        ask(url, rig.ca, None, body),  # no token
        ask(url, rig.ca, "not-a-token", body),
        ask(url, rig.ca, pod_token(rig.kube, pod, audience="https://kubernetes.default"), body),
        ask(url, rig.ca, pod_token(rig.kube, pod, bound=False), body),  # not pod-bound
        ask(url, rig.ca, pod_token(rig.kube, other), body),  # another pod's stream
        ask(url, rig.ca, pod_token(rig.kube, rig.pod({"app": "other"})), body),
        ask(url, rig.ca, pod_token(rig.kube, pod), b'{"public_key": "AAAA", "stream": "x"}'),
        ask(url, rig.ca, pod_token(rig.kube, pod), b"[" * 5000),
    ]
    starting = create_pod(rig.kube, rig.namespace, {"app": "payments"})  # not running yet
    refused.append(ask(url, rig.ca, pod_token(rig.kube, starting),
                       request_body(Signer(generate()), rig.stream(starting))))  # fmt: skip
    statuses = [status for status, _ in refused]
    assert statuses == [401, 401, 401, 403, 403, 403, 400, 413, 503], refused
    assert "selects" in refused[5][1]["error"] and "writes stream" in refused[4][1]["error"]
    # A token of a pod that is gone proves nothing any more.
    token = pod_token(rig.kube, other)
    with rig.kube.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_pod(other["metadata"]["name"], rig.namespace)  # type: ignore[index]
    status, _ = ask(url, rig.ca, token, request_body(Signer(generate()), rig.stream(other)))
    assert status in (401, 403)
    assert operator_metric(rig.operator, "auditlock_operator_certificate_requests_total",
                           outcome="forbidden") >= 3  # fmt: skip


def _certificates(dest: sinks.Destination, stream: str) -> list[Certificate]:
    found = [decode_certificate(dest.get(n)) for n in dest.list("keys/certs/")]
    return [c for c in found if c.subject.stream == stream]


def _segments(dest: sinks.Destination, stream: str) -> list[str]:
    return [n for n in dest.list(f"streams/{stream}/") if "/seg-" in n]


def test_a_collector_certifies_a_new_in_memory_key_at_every_start(rig: Rig, tmp_path: Path) -> None:
    """Events sent before the operator certifies the key wait in the spool; nothing is
    shipped unsigned or lost. A restart in the same pod certifies a new key and the
    stream verifies under the root alone."""
    pod = rig.pod()
    stream = rig.stream(pod)
    token_file = tmp_path / "token"  # the kubelet has not projected it yet
    config = make_config(
        tmp_path / "collector",
        f"file://{rig.store}",
        ports=True,
        stream={
            "id": stream,
            "signing_key_file": None,
            "certificate_url": rig.operator.webhook_url + PATH,
            "certificate_token_file": str(token_file),
            "certificate_ca_file": str(rig.kube.ca_path),
        },
        delivery={"retry_initial_seconds": 0.2, "retry_max_seconds": 0.5},
    )
    dest = sinks.open(f"file://{rig.store}")
    with sidecar_process(tmp_path / "collector", config) as collector:
        collector.start()
        assert post(collector.http_port, [event(i) for i in range(3)], "a")[0] == 202
        time.sleep(1.0)
        assert _segments(dest, stream) == []  # uncertified: nothing shipped yet
        token_file.write_text(pod_token(rig.kube, pod))
        wait_for(lambda: _segments(dest, stream), 20, "events shipped once certified")
        requests = "auditlock_sidecar_certificate_requests_total"
        assert collector.metric(requests, outcome="refused") >= 1  # no token yet
        assert collector.metric(requests, outcome="certified") == 1
        terminate_promptly(collector, 15)
        # Short certificates from here on: the collector renews at two thirds.
        issuer = rig.operator.thread.operator.server.certificates
        issuer.validity_seconds = 6.0
        try:
            collector_running(rig.kube, pod)  # a restart is a new container
            collector.start()
            assert post(collector.http_port, [event(i) for i in range(3, 5)], "b")[0] == 202
            wait_for(lambda: len(_segments(dest, stream)) >= 2, 20, "shipped after the restart")
            wait_for(lambda: len(_certificates(dest, stream)) >= 3, 20, "a renewed certificate")
            terminate_promptly(collector, 15)
        finally:
            issuer.validity_seconds = 24 * 3600.0
    certified = _certificates(dest, stream)
    assert len({c.key_id for c in certified}) == 2  # one key per start, renewed
    report = verify(dest, VerifyOptions(public_keys=[rig.root.public], check_retention=False))
    summary = next(s for s in report.streams if s.stream == stream)
    assert [f for f in report.findings if f.stream == stream] == []
    assert summary.events == 5


def test_by_default_a_namespace_admin_finds_no_private_key(rig: Rig) -> None:
    """A policy that says nothing about signing gets per-pod keys: the operator makes no
    key Secret, the injected collector gets a projected token instead of a key volume,
    and a user with every right in the namespace (Secrets included) finds no private key
    in any Secret or ConfigMap."""
    kube = rig.kube
    namespace = kube.create_namespace()
    create_policy(kube, namespace, "perpod", file_spec(rig.store))
    policy = wait_condition(kube, namespace, "perpod", "Ready", "True", timeout=30)
    assert policy["spec"]["signing"] == "perPod"  # the CRD's default
    assert policy["status"]["keyFingerprint"] == rig.root.key_id
    assert "keySecret" not in policy["status"]
    answer = post_pod_review(rig.operator.webhook_url, kube, namespace)
    patch = json.loads(base64.b64decode(answer["patch"]))
    injected = json.dumps(patch)
    assert "serviceAccountToken" in injected and AUDIENCE in injected
    assert key_secret_name("perpod") not in injected
    with kube.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        client.CoreV1Api(api).create_namespaced_service_account(
            namespace, {"metadata": {"name": "team-admin"}}
        )
        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "everything"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        })  # fmt: skip
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "team-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "everything"},
            "subjects": [{"kind": "ServiceAccount", "name": "team-admin",
                          "namespace": namespace}],
        })  # fmt: skip
    token = kube.service_account_token(namespace, "team-admin")
    with kube.api_client(token=token) as api:
        core = client.CoreV1Api(api)
        secrets = core.list_namespaced_secret(namespace).items
        maps = core.list_namespaced_config_map(namespace).items
        with pytest.raises(client.ApiException) as refused:
            core.list_namespaced_secret("default")  # where the operator's keys would be
        assert refused.value.status == 403
    values = [base64.b64decode(v) for s in secrets for v in (s.data or {}).values()]
    values += [v.encode() for m in maps for v in (m.data or {}).values()]
    assert maps and all(b"PRIVATE KEY" not in v for v in values)
    assert not any(s.metadata.name == key_secret_name("perpod") for s in secrets)
    kube.delete_namespace(namespace)


def test_one_key_per_collector_container(rig: Rig) -> None:
    """A second key for a running collector (a token minted by someone else for the same
    pod) is refused; the same key renews; a restarted container gets a new key."""
    pod = rig.pod()
    url, stream = rig.operator.webhook_url, rig.stream(pod)
    first, second = Signer(generate()), Signer(generate())
    collector_running(rig.kube, pod)
    assert ask(url, rig.ca, pod_token(rig.kube, pod), request_body(first, stream))[0] == 201
    status, answer = ask(url, rig.ca, pod_token(rig.kube, pod), request_body(second, stream))
    assert status == 403 and "already has a certified key" in answer["error"], answer
    assert ask(url, rig.ca, pod_token(rig.kube, pod), request_body(first, stream))[0] == 201
    collector_running(rig.kube, pod)  # the collector restarted: a new container id
    assert ask(url, rig.ca, pod_token(rig.kube, pod), request_body(second, stream))[0] == 201
    claims = list(sinks.open(f"file://{rig.store}").list("keys/claims/"))
    assert len([c for c in claims if pod["metadata"]["uid"] in c]) == 2  # type: ignore[index]
    report = verify(sinks.open(f"file://{rig.store}"), VerifyOptions(check_retention=False))
    assert "unexpected-object" not in {f.code for f in report.findings}
