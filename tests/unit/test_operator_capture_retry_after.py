"""An audit batch the collector did not store is answered 503 with the configured
Retry-After (docs/operator.md, "Cluster-level capture"): the API server's client waits
that long before each resend, so it sets how long the API server holds the batch. Zero
is sent as `Retry-After: 0` (resend at once), not left out."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auditlock.operator import injection, tls
from auditlock.operator.capture import RETRY_AFTER_SECONDS, ClusterCapture
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.webhook_server import Listener, WebhookServer
from auditlock.policy import parse_spec
from tests.servers.kube_controlplane import free_port

REQUEST = {
    "stage": "ResponseComplete", "auditID": "a-1", "verb": "create",
    "requestReceivedTimestamp": "2026-12-01T00:00:00.000000Z",
    "objectRef": {"resource": "secrets", "namespace": "shop", "name": "refund-key"},
    "responseStatus": {"code": 201},
}  # fmt: skip


def _registry() -> PolicyRegistry:
    spec = parse_spec({"destination": {"file": {"path": "/trail"}}, "retention": {"days": 1}})
    registry = PolicyRegistry()
    registry.put(PolicyEntry("shop", "p", "uid", 1, spec, "h", "2026-01-01T00:00:00Z"))
    return registry


@pytest.mark.parametrize("seconds", [RETRY_AFTER_SECONDS, 0])
async def test_unreachable_collector_is_a_503_with_the_configured_retry_after(
    tmp_path: Path, seconds: int
) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens: the collector is down
    capture = ClusterCapture(_registry(), None, collector=nobody, retry_after_seconds=seconds)
    cert = tls.self_signed(["127.0.0.1"], tmp_path)
    server = WebhookServer(
        registry=capture.registry,
        injection=injection.InjectionSettings(cluster="test", image="i", native_sidecar=True),
        listeners=[Listener("127.0.0.1", 0, cert.server_context())],
        audit_sink=capture.audit_sink,
    )
    await server.start()
    body: dict[str, Any] = {"kind": "EventList", "items": [REQUEST]}
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"https://127.0.0.1:{server.bound_ports[0]}/audit",
                json=body,
                ssl=ssl.create_default_context(cadata=cert.ca_pem.decode()),
            ) as resp,
        ):
            assert resp.status == 503
            assert resp.headers.get("Retry-After") == str(seconds)
            assert "unreachable" in (await resp.json())["error"]
    finally:
        await server.stop()
        await capture.close()
