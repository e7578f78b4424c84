"""Asking the operator for a certificate as a collector does: a pod-bound projected token
minted with the TokenRequest API (what the kubelet mounts), then POST /v1/certificates."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Any

from kubernetes import client

from auditlock.ledger.keys import Signer, raw_public
from auditlock.operator.certificates import AUDIENCE, PATH
from auditlock.operator.names import COLLECTOR_CONTAINER
from tests.servers.kube_controlplane import KubeControlPlane


def pod_token(
    kube: KubeControlPlane,
    pod: dict[str, Any],
    *,
    audience: str = AUDIENCE,
    account: str = "default",
    bound: bool = True,
) -> str:
    """A token of the pod's ServiceAccount, bound to the pod as the kubelet's projected
    volume binds it (pod name and UID in its claims), for `audience`."""
    meta = pod["metadata"]
    ref = client.V1BoundObjectReference(
        api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"]
    )
    spec = client.V1TokenRequestSpec(
        audiences=[audience], expiration_seconds=600, bound_object_ref=ref if bound else None
    )
    with kube.api_client() as api:
        answer = client.CoreV1Api(api).create_namespaced_service_account_token(
            account, meta["namespace"], client.AuthenticationV1TokenRequest(spec=spec)
        )
    token: str = answer.status.token
    return token


def collector_running(
    kube: KubeControlPlane, pod: dict[str, Any], container_id: str | None = None
) -> str:
    """Report the pod's collector container as running, as the kubelet would (the rig has
    no kubelet); returns its container id (a new one unless given: a restart)."""
    container_id = container_id or f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}"
    meta = pod["metadata"]
    status = {"status": {"containerStatuses": [{
        "name": COLLECTOR_CONTAINER, "containerID": container_id, "image": "auditlock",
        "imageID": "", "ready": True, "restartCount": 0,
        "state": {"running": {"startedAt": "2026-12-01T00:00:00Z"}},
    }]}}  # fmt: skip
    with kube.api_client() as api:
        client.CoreV1Api(api).patch_namespaced_pod_status(meta["name"], meta["namespace"], status)
    return container_id


def request_body(signer: Signer, stream: str) -> bytes:
    public = base64.b64encode(raw_public(signer.public)).decode()
    return json.dumps({"public_key": public, "stream": stream}).encode()


def ask(url: str, ca: ssl.SSLContext, token: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST to the operator's certificate endpoint; (status, JSON answer)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + PATH, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, context=ca, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
