"""A valid ledger event with every member set: the starting point tests change."""

from __future__ import annotations

from typing import Any


def sample() -> dict[str, Any]:
    return {
        "id": "evt-1",
        "time": "2026-11-29T16:08:52.5+01:00",
        "category": "access",
        "action": "get",
        "outcome": "success",
        "actor": {"kind": "user", "name": "alice", "ip": "10.0.0.7"},
        "target": {"resource": "secrets", "namespace": "shop", "name": "db"},
        "source": {"cluster": "c1", "namespace": "shop", "pod": "api-1", "container": "api"},
        "correlation": {"request_id": "r1", "trace_id": "t1"},
        "details": {"verb": "get", "bytes": 12, "ok": True, "tags": ["a", None]},
    }
