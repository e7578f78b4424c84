"""The operator certifies a collector's per-pod key only for the pod its token proves
(docs/operator.md, "Per-pod keys"): real kube-apiserver TokenReview of pod-bound
projected tokens, the operator's real HTTPS server, the certificate stored in the
policy's file:// destination, and `verify --public-key ROOT` following it."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from auditlock import sinks
from auditlock.ledger.certificate import decode_certificate
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.synth import synthetic_events
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.writer import StreamWriter
from auditlock.operator.stream_ids import stream_id
from tests.helpers.certificates import ask, pod_token, request_body
from tests.helpers.policies import (
    create_pod,
    create_policy,
    file_spec,
    operator_metric,
    wait_condition,
)
from tests.servers.auditlock_operator import RunningOperator, start_operator
from tests.servers.kube_controlplane import KubeControlPlane

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
        return create_pod(self.kube, self.namespace, labels or {"app": "payments"})

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
        for _, event in synthetic_events(stream, 3):
            writer.append(event)
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
    statuses = [status for status, _ in refused]
    assert statuses == [401, 401, 401, 403, 403, 403, 400, 413], refused
    assert "selects" in refused[5][1]["error"] and "writes stream" in refused[4][1]["error"]
    # A token of a pod that is gone proves nothing any more.
    token = pod_token(rig.kube, other)
    with rig.kube.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_pod(other["metadata"]["name"], rig.namespace)  # type: ignore[index]
    status, _ = ask(url, rig.ca, token, request_body(Signer(generate()), rig.stream(other)))
    assert status in (401, 403)
    assert operator_metric(rig.operator, "auditlock_operator_certificate_requests_total",
                           outcome="forbidden") >= 3  # fmt: skip
