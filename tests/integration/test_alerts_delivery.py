"""Delivery of alerts to real receivers: a real Alertmanager (API v2) routes a fired alert
with its labels and later its resolution; a real HTTP server checks the webhook's
HMAC-SHA256 signature; a receiver that is down is retried and counted while the others
still deliver, and submitting never waits."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from auditlock.alerts.dispatch import Dispatcher, DispatchMetrics
from auditlock.alerts.engine import Engine, Transition
from auditlock.alerts.receivers.alertmanager import AlertmanagerReceiver
from auditlock.alerts.receivers.trail import TrailReceiver, alert_event
from auditlock.alerts.receivers.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookReceiver,
    verify_signature,
)
from auditlock.alerts.rules import compile_rule
from tests.helpers.events import small
from tests.servers.alertmanager import Alertmanager

SECRET = b"webhook-test-secret"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _engine(test_id: str, clock: Clock) -> Engine:
    rule = compile_rule(
        "exec-into-pod",
        "payments",
        {
            "severity": "critical",
            "summary": "{{ actor.name }} ran {{ action }} in pod {{ target.name }}",
            "labels": {"test": test_id},
            "match": [{"field": "action", "in": ["exec", "attach"]}],
            "groupBy": ["actor.name"],
            "resolveAfterSeconds": 10,
        },
    )
    return Engine([rule], source="operator", clock=clock)


def _exec_event(n: int = 0) -> dict[str, Any]:
    return small(
        id=f"k8s-audit-{n}",
        time="2026-11-30T20:00:00Z",
        action="exec",
        actor={"kind": "user", "name": "mallory"},
        target={"resource": "pods/exec", "namespace": "payments", "name": "api-0"},
        source=None,
    )


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_alertmanager_routes_the_alert_with_its_labels_then_its_resolution(
    alertmanager: Alertmanager,
) -> None:
    test_id = uuid.uuid4().hex
    clock = Clock()
    clock.now -= 30  # the engine's "later" (resolution) must not be in Alertmanager's future
    engine = _engine(test_id, clock)
    registry = CollectorRegistry()
    stored: list[dict[str, Any]] = []

    async def store(events: list[dict[str, Any]]) -> None:
        stored.extend(events)

    async def run() -> None:
        dispatcher = Dispatcher(
            [AlertmanagerReceiver(alertmanager.url), TrailReceiver(store)],
            DispatchMetrics(registry, "test"),
        )
        dispatcher.start()
        dispatcher.submit(engine.observe(_exec_event(1), "c_payments_api-0"))
        await asyncio.wait_for(dispatcher.drain(), 10)
        await asyncio.to_thread(alertmanager.receiver.wait_for_alert, "firing", test=test_id)
        clock.now += 11
        dispatcher.submit(engine.tick())
        await asyncio.wait_for(dispatcher.drain(), 10)
        await dispatcher.close()

    asyncio.run(run())
    firing = alertmanager.receiver.wait_for_alert("firing", test=test_id)
    assert firing["labels"] == {
        "alertname": "exec-into-pod",
        "severity": "critical",
        "namespace": "payments",
        "rule": "payments/exec-into-pod",
        "auditlock_source": "operator",
        "actor_name": "mallory",
        "stream": "c_payments_api-0",
        "test": test_id,
    }
    assert firing["annotations"]["summary"] == "mallory ran exec in pod api-0"
    assert firing["annotations"]["events"] == "c_payments_api-0:k8s-audit-1"
    resolved = alertmanager.receiver.wait_for_alert("resolved", test=test_id)
    assert resolved["fingerprint"] == firing["fingerprint"]
    assert [e["action"] for e in stored] == ["alert.fired", "alert.resolved"]
    assert stored[0]["details"]["events"] == [
        {"stream": "c_payments_api-0", "id": "k8s-audit-1", "time": "2026-11-30T20:00:00Z"}
    ]
    assert _metric(registry, "test_alert_deliveries_total", receiver="alertmanager") == 2


def test_the_webhook_signature_verifies_on_a_real_server_and_a_dead_receiver_is_counted() -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    async def run() -> CollectorRegistry:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        registry = CollectorRegistry()
        dead = AlertmanagerReceiver("http://127.0.0.1:9", timeout=0.5)  # discard port
        dispatcher = Dispatcher(
            [WebhookReceiver(f"http://127.0.0.1:{port}/hook", SECRET), dead],
            DispatchMetrics(registry, "test"),
            queue_limit=3,
            first_backoff=0.05,
        )
        dispatcher.start()
        clock = Clock()
        engine = _engine("hook", clock)
        started = time.perf_counter()
        changes: list[Transition] = []
        for n in range(10):
            clock.now += 61  # each event resends (updated) the firing alert
            changes += engine.observe(_exec_event(n), "s")
        dispatcher.submit(changes)
        assert time.perf_counter() - started < 0.05  # submit never waits on a receiver

        async def until(check: Any) -> None:
            async with asyncio.timeout(10):
                while not check():  # noqa: ASYNC110 - polling a counter and a list
                    await asyncio.sleep(0.05)

        await until(lambda: received)
        await until(
            lambda: (
                _metric(registry, "test_alert_delivery_failures_total", receiver="alertmanager")
                >= 2
            )
        )
        await dispatcher.close()
        await runner.cleanup()
        return registry

    registry = asyncio.run(run())
    body, headers = received[0]
    assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify_signature(
        b"other", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER]
    )
    assert not verify_signature(
        SECRET, headers[TIMESTAMP_HEADER], body + b" ", headers[SIGNATURE_HEADER]
    )
    assert b'"status":"firing"' in body and b'"rule":"payments/exec-into-pod"' in body
    # ten transitions into a queue of three: seven dropped, counted, for the dead one
    assert _metric(registry, "test_alert_deliveries_dropped_total", receiver="alertmanager") == 7
    assert _metric(registry, "test_alert_deliveries_total", receiver="alertmanager") == 0


def test_the_alert_event_is_a_valid_ledger_event() -> None:
    from auditlock.ledger.event import AuditEvent

    clock = Clock()
    (fired,) = _engine("x", clock).observe(_exec_event(), "s")
    event = alert_event(fired)
    AuditEvent.model_validate({**event, "id": "a1", "time": "2026-11-30T20:00:00Z",
                               "source": {"cluster": "c"}})  # fmt: skip
    assert event["target"] == {
        "resource": "auditalertrules",
        "namespace": "payments",
        "name": "exec-into-pod",
    }
