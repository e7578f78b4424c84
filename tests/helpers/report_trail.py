"""A small, real trail with something for every part of the report, written with the
ledger's own writer on file:// (simulated clock): three hours of app and cluster events,
failures and denials, Secret reads, configuration changes, an RBAC grant, an AuditPolicy
change, an exec session, a quiet stretch longer than the heartbeat (a restart: a gap in the
cadence plot and verify's `restart` warning), and hostile strings in actor names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditlock import sinks
from auditlock.ledger.keys import Signer, public_pem
from auditlock.ledger.synth import SimulatedClock
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.writer import StreamWriter

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MINUTE_NS = 60 * 1_000_000_000
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">$x^2$'


def events(count: int = 180) -> list[dict[str, Any]]:
    """`count` events, one a minute from START_NS, cycling through every kind the report
    shows."""
    kinds = [
        _event("access", "get", "user", "alice", "secrets", "db-password"),
        _event("data", "order.update", "user", "bob", "orders", "order-7"),
        _event("configuration", "patch", "user", "admin", "configmaps", "orders-settings"),
        _event("access", "get", "user", HOSTILE, "secrets", "api-token"),
        _event(
            "authorization",
            "create",
            "user",
            "admin",
            "rolebindings",
            "ops-admin",
            details={
                "subjects": [{"kind": "User", "name": "mallory"}],
                "role_ref": {"kind": "ClusterRole", "name": "cluster-admin"},
                "status_code": 201,
            },
        ),
        _event(
            "access",
            "list",
            "user",
            "eve",
            "secrets",
            None,
            outcome="failure",
            details={"status_code": 403},
        ),
        _event(
            "configuration",
            "patch",
            "user",
            "admin",
            "auditpolicies",
            "orders",
            details={"status_code": 200},
        ),
        _event(
            "access",
            "exec",
            "user",
            HOSTILE,
            "pods/exec",
            "orders-0",
            details={
                "request_uri": "/api/v1/namespaces/shop/pods/orders-0/exec?"
                "command=sh&command=-c&command=id&container=app"
            },
        ),
        _event(
            "data",
            "order.refund",
            "serviceaccount",
            "billing",
            "orders",
            "order-9",
            outcome="failure",
        ),
    ]
    out = []
    for i in range(count):
        event = dict(kinds[i % len(kinds)])
        event["id"] = f"ev-{i:05d}"
        event["time"] = format_ns(START_NS + i * MINUTE_NS)
        out.append(event)
    return out


def _event(
    category: str, action: str, kind: str, name: str, resource: str, target: str | None,
    *, outcome: str = "success", details: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    event: dict[str, Any] = {
        "category": category,
        "action": action,
        "outcome": outcome,
        "actor": {"kind": kind, "name": name},
        "target": {
            "resource": resource,
            "namespace": "shop",
            **({"name": target} if target else {}),
        },
        "source": {"cluster": "rig", "namespace": "shop", "pod": "orders-0"},
        "correlation": {"request_id": "req-1"},
    }
    if details:
        event["details"] = details
    return event


def write_trail(
    root: Path, signer: Signer, *, count: int = 180, stream: str = "rig_shop_orders-0",
    quiet_after: int | None = 120, quiet_minutes: int = 20,
) -> str:  # fmt: skip
    """Write the trail under `root`; return its URL. Before event `quiet_after` the
    writer stops and a new one resumes the stream `quiet_minutes` later: the downtime a
    restart declares (verify's `restart` warning), a gap in the cadence plot."""
    url = f"file://{root}"
    destination = sinks.open(url)
    clock = SimulatedClock(START_NS)
    writer = StreamWriter.resume(
        destination, stream, signer, retention=None, heartbeat_seconds=60.0, clock=clock
    )
    shift = 0
    for i, event in enumerate(events(count)):
        when = START_NS + i * MINUTE_NS + shift
        if quiet_after is not None and i == quiet_after:
            shift = quiet_minutes * MINUTE_NS
            when += shift
            clock.now = when
            writer = StreamWriter.resume(
                destination, stream, signer, retention=None, heartbeat_seconds=60.0, clock=clock
            )
        event["time"] = format_ns(when)
        clock.now = when
        writer.append(event)
        writer.store(writer.seal())  # a checkpoint a minute: the heartbeat is kept
    clock.now += MINUTE_NS
    writer.store(writer.close())
    destination.close()
    return url


def public_key_file(path: Path, signer: Signer) -> Path:
    path.write_bytes(public_pem(signer.public))
    return path
