"""Hostile HTTP against the operator's webhook server: every answer is an error the
client can read (4xx, or an AdmissionReview), never a 500 and never a traceback.

The server is the real `WebhookServer` on real TLS sockets; requests are written as raw
bytes, as an attacker would, so the framing itself can be broken.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from auditlock.operator import injection, tls
from auditlock.operator.capture import AuditAnswer
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.webhook_server import MAX_BODY, Listener, WebhookServer
from auditlock.policy import parse_spec
from tests.helpers.policies import create_policy, file_spec, wait_condition, wait_for
from tests.helpers.trail import stored_events
from tests.servers.auditlock_child import run_auditlock
from tests.servers.auditlock_operator import RunningOperator, remove_policy

TOKEN = "s3cret-token"
DEEP = b"[" * 100_000 + b"]" * 100_000


class Served:
    def __init__(self, server: WebhookServer, context: ssl.SSLContext) -> None:
        self.server = server
        self.context = context
        self.received: list[dict[str, Any]] = []

    async def raw(self, request: bytes, *, then: bytes = b"", pause: float = 0.0) -> bytes:
        return await raw_https(
            self.server.bound_ports[0], self.context, request, then=then, pause=pause
        )

    async def post(
        self, path: str, body: bytes, headers: dict[str, bytes] | None = None
    ) -> tuple[int, bytes]:
        return split(await self.raw(post_request(path, body, headers)))

    def metric(self, name: str, **labels: str) -> float:
        value = self.server.metrics.get_sample_value(name, labels)
        return value or 0.0


async def raw_https(
    port: int, context: ssl.SSLContext, request: bytes, *, then: bytes = b"", pause: float = 0.0
) -> bytes:
    """Send `request` over TLS, optionally `then` after `pause` seconds; the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(request)
        await writer.drain()
        if then:
            await asyncio.sleep(pause)
            writer.write(then)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()


def post_request(path: str, body: bytes, headers: dict[str, bytes] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: operator"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + value)
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def split(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _registry() -> PolicyRegistry:
    registry = PolicyRegistry()
    spec = parse_spec(
        {
            "selector": {"matchLabels": {"app": "x"}},
            "destination": {"file": {"path": "/t"}},
            "retention": {"days": 1},
            "enforcement": "required",
            "sources": {"cluster": {"auditWebhook": True}},
        }
    )
    registry.put(PolicyEntry("shop", "p", "u", 1, spec, "h", "2026-01-01T00:00:00Z"))
    return registry


@pytest_asyncio.fixture(loop_scope="function")
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    cert = tls.self_signed(["127.0.0.1"], tmp_path)
    holder: list[Served] = []

    async def sink(events: list[dict[str, Any]]) -> AuditAnswer:
        holder[0].received.extend(events)
        return AuditAnswer(200, accepted=len(events))

    server = WebhookServer(
        registry=_registry(),
        injection=injection.InjectionSettings(cluster="test", image="i", native_sidecar=True),
        listeners=[Listener("127.0.0.1", 0, cert.server_context())],
        audit_sink=sink,
        audit_token=TOKEN,
        body_timeout=1.0,
    )
    await server.start()
    holder.append(Served(server, ssl.create_default_context(cadata=cert.ca_pem.decode())))
    try:
        yield holder[0]
    finally:
        await server.stop()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


GOOD = orjson.dumps({"kind": "EventList", "items": [{"auditID": "good"}]})


async def test_non_ascii_bearer_token_is_401_not_500(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    for token in (b"Bearer t\xc3\xa9", b"Bearer \xff\xfe", "Bearer 秘密".encode()):
        status, body = await served.post("/audit", GOOD, {"Authorization": token})
        assert status == 401, body
        assert orjson.loads(body) == {"error": "audit intake needs a bearer token"}
    assert served.metric("auditlock_operator_audit_webhook_events_total", outcome="unauthorized")
    assert served.received == []
    status, body = await served.post("/audit", GOOD, {"Authorization": f"Bearer {TOKEN}".encode()})
    assert (status, orjson.loads(body)) == (200, {"accepted": 1})
    assert served.received == [{"auditID": "good"}]
    no_tracebacks(caplog)


async def test_deep_json_is_refused_with_a_4xx_or_a_review(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}".encode()}
    status, body = await served.post("/audit", DEEP, auth)
    assert status == 400 and b"expected an EventList" in body
    deep_object = b'{"items":' + DEEP + b"}"
    status, body = await served.post("/audit", deep_object, auth)
    assert status == 400
    assert served.received == []
    for path in ("/mutate-pods", "/validate-pods"):
        # The API server needs an AdmissionReview; the refusal is inside it (code 400).
        review = b'{"request":{"uid":"u1","namespace":"shop","object":' + DEEP + b"}}"
        status, body = await served.post(path, review)
        assert status == 200
        response = orjson.loads(body)["response"]
        assert response["allowed"] is False and response["status"]["code"] == 400
    no_tracebacks(caplog)


async def test_oversize_bodies_are_413(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    big = b" " * (MAX_BODY + 1)
    auth = {"Authorization": f"Bearer {TOKEN}".encode()}
    for path in ("/audit", "/mutate-pods", "/validate-pods"):
        status, body = await served.post(path, big, auth)
        assert status == 413, (path, body[:200])
        assert b"larger than" in body
        assert served.metric(
            "auditlock_operator_http_refused_bodies_total", path=path, status="413"
        )
    assert served.received == []
    no_tracebacks(caplog)


async def test_broken_chunked_framing_is_400_without_a_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    head = (
        b"POST /audit HTTP/1.1\r\nHost: operator\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for chunks in (b"-5\r\nabcde\r\n0\r\n\r\n", b"1" * 20_000 + b"\r\nabc\r\n0\r\n\r\n"):
        # All at once, the parser refuses it; after the handler began reading, aiohttp's
        # parser drops the body unfinished and the body timeout answers.
        status, _ = split(await served.raw(head + chunks))
        assert status == 400
        status, body = split(await served.raw(head + b"3\r\nabc\r\n", then=chunks, pause=0.2))
        assert (status, orjson.loads(body)) == (
            408,
            {"error": "request body not received within 1 s"},
        )
    assert served.received == []
    assert served.metric("auditlock_operator_http_malformed_requests_total") >= 1
    no_tracebacks(caplog)
    status, body = await served.post("/audit", GOOD, {"Authorization": f"Bearer {TOKEN}".encode()})
    assert (status, orjson.loads(body)) == (200, {"accepted": 1})


def audit_event(namespace: str, audit_id: str) -> dict[str, Any]:
    """An in-scope `audit.k8s.io/v1` Event: a Secret read in `namespace`."""
    return {
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": "get",
        "user": {"username": "mallory"},
        "objectRef": {"namespace": namespace, "resource": "secrets", "name": "db"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-11-30T12:00:00.000000Z",
    }


def test_real_operator_refuses_hostile_audit_bodies_and_keeps_what_it_accepted(
    running_operator: RunningOperator,
    operator_namespace: str,
    operator_collector: Path,
    tmp_path: Path,
) -> None:
    """The operator's real audit intake (the API server's audit port), its real collector
    and `auditlock verify`: each refused body carries an in-scope event that must never
    reach the ledger; the accepted one is there exactly once, and the trail verifies."""
    kube = running_operator.kube
    create_policy(kube, operator_namespace, "hostile", file_spec(tmp_path / "app-trail"))
    try:
        hostile_bodies_are_refused(
            running_operator, operator_namespace, operator_collector, tmp_path
        )
    finally:
        remove_policy(kube, operator_namespace, "hostile")


def hostile_bodies_are_refused(
    running_operator: RunningOperator,
    operator_namespace: str,
    operator_collector: Path,
    tmp_path: Path,
) -> None:
    kube = running_operator.kube
    wait_condition(kube, operator_namespace, "hostile", "Ready", "True")
    context = kube.client_ssl_context()
    tag = uuid.uuid4().hex[:8]

    def event(name: str) -> dict[str, Any]:
        return audit_event(operator_namespace, f"{tag}-{name}")

    async def attack() -> list[tuple[int, bytes]]:
        port = kube.audit_port
        deep = orjson.dumps({"items": [event("deep")]})[:-2] + b"," + DEEP + b"]}"
        big = orjson.dumps({"items": [event("big")], "pad": "x" * (MAX_BODY + 1)})
        chunked_head = b"POST /audit HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n"
        first = orjson.dumps({"items": [event("chunked")]})
        answers = [
            split(await raw_https(port, context, post_request("/audit", deep))),
            split(await raw_https(port, context, post_request("/audit", big))),
            split(
                await raw_https(
                    port,
                    context,
                    chunked_head + f"{len(first):x}\r\n".encode() + first + b"\r\n",
                    then=b"-5\r\nabcde\r\n0\r\n\r\n",
                    pause=0.2,
                )
            ),
        ]
        good = {"items": [event("good"), {"objectRef": [1]}, {"responseStatus": 5}, "junk"]}
        answers.append(
            split(await raw_https(port, context, post_request("/audit", orjson.dumps(good))))
        )
        return answers

    deep, big, chunked, good = asyncio.run(attack())
    assert deep[0] == 400 and b"expected an EventList" in deep[1]
    assert big[0] == 413
    assert chunked[0] in (400, 408)
    assert good == (200, b'{"accepted": 1}')

    def ours() -> list[str]:
        return [
            e["id"]
            for e in stored_events(operator_collector)
            if str(e.get("id", "")).startswith(f"k8s-audit-{tag}-")
        ]

    wait_for("the accepted event in the operator's ledger", ours, 30)
    time.sleep(1.0)  # anything queued before it has been stored too
    assert ours() == [f"k8s-audit-{tag}-good"]
    private = load_pem_private_key((tmp_path / "ed25519.pem").read_bytes(), None)
    public = tmp_path / "ed25519.pub.pem"
    public.write_bytes(
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    done = run_auditlock(
        "verify", f"file://{operator_collector}", "--public-key", str(public), "--json",
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["result"] == "PASS"


async def test_a_failing_audit_sink_is_a_503_to_resend_not_a_500(tmp_path: Path) -> None:
    cert = tls.self_signed(["127.0.0.1"], tmp_path)

    async def broken(events: list[dict[str, Any]]) -> AuditAnswer:
        raise RuntimeError("bug in the sink")

    server = WebhookServer(
        registry=_registry(),
        injection=injection.InjectionSettings(image="i", native_sidecar=True),
        listeners=[Listener("127.0.0.1", 0, cert.server_context())],
        audit_sink=broken,
    )
    await server.start()
    try:
        context = ssl.create_default_context(cadata=cert.ca_pem.decode())
        answer = await raw_https(server.bound_ports[0], context, post_request("/audit", GOOD))
        status, body = split(answer)
        assert status == 503 and b"Retry-After: 5" in answer
        assert b"resend it" in body
        sample = server.metrics.get_sample_value(
            "auditlock_operator_audit_webhook_events_total", {"outcome": "sink-error"}
        )
        assert sample == 1.0
    finally:
        await server.stop()
