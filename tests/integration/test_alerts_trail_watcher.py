"""The operator's trail watcher against a real destination (file://, written by a real
collector) and a real Alertmanager: each trail-integrity alert fires with its labels and
resolves when its cause is gone. The policy's status comes from a reader the test
controls (the operator reads it from the API server; test_alerts_operator.py shows that
path with the retention lock)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from auditlock.ledger.names import checkpoint_name
from auditlock.operator.alerting import AlertSettings, OperatorAlerts
from auditlock.operator.reconcile import entry_for
from auditlock.operator.registry import PolicyRegistry
from tests.servers.alertmanager import Alertmanager
from tests.servers.sidecar import make_config, sidecar_process


def test_trail_integrity_alerts_fire_and_resolve(
    alertmanager: Alertmanager, tmp_path: Path
) -> None:
    namespace = f"w-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "store"
    body = {
        "metadata": {"namespace": namespace, "name": "p", "uid": "u", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"destination": {"file": {"path": str(store)}}, "retention": {"days": 1}},
    }  # fmt: skip
    policies = PolicyRegistry()
    policies.put(entry_for(body, cluster="rig"))
    status: dict[str, Any] = {
        "podsUnaudited": 2,
        "conditions": [
            {"type": "TrailVerified", "status": "False", "message": "seq 7 of s: chain broken"},
            {"type": "DestinationLocked", "status": "True", "message": "locked"},
            {"type": "AllPodsAudited", "status": "False", "message": "web-1, web-2 opted out"},
        ],
    }
    stream = f"rig_{namespace}_api-0"
    config = make_config(
        tmp_path / "collector",
        f"file://{store}",
        ports=True,
        stream={"id": stream},
        delivery={"heartbeat_seconds": 1.0},
    )
    settings = AlertSettings(alertmanager_url=alertmanager.url, watch_seconds=3600)
    alerts = OperatorAlerts(
        settings,
        policies,
        cluster="rig",
        metrics=CollectorRegistry(),
        read_status=lambda ns, name: status,
    )

    def wait(state: str, **labels: str) -> dict[str, Any]:
        return alertmanager.receiver.wait_for_alert(state, namespace=namespace, **labels)

    async def run() -> None:
        alerts.start()
        try:
            with sidecar_process(tmp_path / "collector", config) as collector:
                await asyncio.to_thread(collector.start)
                await asyncio.sleep(1.5)
                bad = store / checkpoint_name(stream, 0, 999_999)
                bad.write_bytes(b"not a checkpoint\n")
                await alerts.watch_once()
                verified = await asyncio.to_thread(
                    wait, "firing", alertname="AuditlockTrailNotVerified"
                )
                assert verified["labels"]["policy"] == "p"
                assert "chain broken" in verified["annotations"]["summary"]
                unaudited = await asyncio.to_thread(
                    wait, "firing", alertname="AuditlockPodsUnaudited"
                )
                assert unaudited["annotations"]["summary"].startswith("2 selected pod(s)")
                invalid = await asyncio.to_thread(
                    wait, "firing", alertname="AuditlockCheckpointInvalid"
                )
                assert invalid["labels"]["stream"] == stream
                assert invalid["labels"]["severity"] == "critical"

                status["podsUnaudited"] = 0
                status["conditions"] = [
                    {"type": "TrailVerified", "status": "True"},
                    {"type": "DestinationLocked", "status": "False", "message": "no lock"},
                ]
                bad.chmod(0o600)
                bad.unlink()
                await alerts.watch_once()
                for name in ("AuditlockTrailNotVerified", "AuditlockPodsUnaudited",
                             "AuditlockCheckpointInvalid"):  # fmt: skip
                    await asyncio.to_thread(wait, "resolved", alertname=name)
                await asyncio.to_thread(wait, "firing", alertname="AuditlockRetentionLockMissing")
        finally:
            await alerts.close()

    asyncio.run(run())
