"""The webhook server over TLS: answers, never a 500, audit intake auth, health/metrics."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auditlock.operator import injection, tls
from auditlock.operator.capture import AuditAnswer
from auditlock.operator.keys import KeySecretError, from_secret_data, generate
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.webhook_server import Listener, WebhookServer
from auditlock.policy import parse_spec


def _registry(enforcement: str = "optional") -> PolicyRegistry:
    registry = PolicyRegistry()
    spec = parse_spec(
        {
            "selector": {"matchLabels": {"app": "x"}},
            "destination": {"file": {"path": "/t"}},
            "retention": {"days": 1},
            "enforcement": enforcement,
        }
    )
    registry.put(PolicyEntry("shop", "p", "u", 1, spec, "h", "2026-01-01T00:00:00Z"))
    return registry


async def _server(
    tmp_path: Path, registry: PolicyRegistry, **kw: Any
) -> tuple[WebhookServer, ssl.SSLContext]:
    cert = tls.self_signed(["127.0.0.1"], tmp_path)
    server = WebhookServer(
        registry=registry,
        injection=injection.InjectionSettings(cluster="test", image="i", native_sidecar=True),
        listeners=[Listener("127.0.0.1", 0, cert.server_context()), Listener("127.0.0.1", 0, None)],
        **kw,
    )
    await server.start()
    client_ctx = ssl.create_default_context(cadata=cert.ca_pem.decode())
    return server, client_ctx


async def test_tls_answers_and_garbage_never_gets_a_500(tmp_path: Path) -> None:
    received: list[list[dict[str, Any]]] = []

    async def sink(events: list[dict[str, Any]]) -> AuditAnswer:
        received.append(events)
        return AuditAnswer(200, accepted=len(events))

    server, ctx = await _server(tmp_path, _registry("required"), audit_sink=sink, audit_token="t0k")
    tls_port, plain_port = server.bound_ports
    base = f"https://127.0.0.1:{tls_port}"
    try:
        async with aiohttp.ClientSession() as http:
            for body in (b"", b"{", b'{"request": []}', b"\x00" * 100):
                async with http.post(f"{base}/validate-pods", data=body, ssl=ctx) as resp:
                    assert resp.status == 200
                    answer = await resp.json()
                    assert answer["response"]["allowed"] is False
                    assert "enforcement: required" in answer["response"]["status"]["message"]
            async with http.post(f"{base}/audit", json={"items": [{}]}, ssl=ctx) as resp:
                assert resp.status == 401
            headers = {"Authorization": "Bearer t0k"}
            async with http.post(
                f"{base}/audit", json={"items": [{"a": 1}]}, ssl=ctx, headers=headers
            ) as resp:
                assert resp.status == 200 and (await resp.json()) == {"accepted": 1}
            async with http.post(f"{base}/audit", data=b"[", ssl=ctx, headers=headers) as resp:
                assert resp.status == 400
            # The plain listener serves health and metrics only, never the webhooks.
            plain = f"http://127.0.0.1:{plain_port}"
            async with http.post(f"{plain}/audit", json={"items": []}) as resp:
                assert resp.status in (404, 405)
            async with http.get(f"{plain}/readyz") as resp:
                assert resp.status == 503
            server.registry.mark_synced()
            async with http.get(f"{plain}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{plain}/metrics") as resp:
                text = await resp.text()
        assert 'outcome="denied-unparseable",webhook="validate"} 4.0' in text
        assert received == [[{"a": 1}]]
    finally:
        await server.stop()


async def test_handler_bug_is_answered_by_enforcement_not_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditlock.operator import admission

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("bug")

    monkeypatch.setattr(admission, "mutate", broken)
    server, ctx = await _server(tmp_path, _registry("optional"))
    try:
        review = {"request": {"uid": "u9", "namespace": "shop"}}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"https://127.0.0.1:{server.bound_ports[0]}/mutate-pods",
                data=json.dumps(review),
                ssl=ctx,
            ) as resp,
        ):
            assert resp.status == 200
            answer = await resp.json()
        assert answer["response"]["uid"] == "u9" and answer["response"]["allowed"] is True
    finally:
        await server.stop()


def test_signing_key_round_trips_and_is_never_in_repr() -> None:
    material = generate()
    assert material.private_pem.decode() not in repr(material)
    again = from_secret_data(material.secret_data(), "s")
    assert again.key_id == material.key_id and len(material.key_id) == 64
    with pytest.raises(KeySecretError, match=r"has no ed25519\.pem"):
        from_secret_data({}, "s")
    with pytest.raises(KeySecretError, match="not an unencrypted PEM") as bad:
        from_secret_data({"ed25519.pem": "bm90IGEga2V5"}, "s")
    assert "bm90" not in str(bad.value)
