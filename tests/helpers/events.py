"""Valid ledger events for tests: a small one with only the members a test names, one
with every member set, and a way to change one member deep inside an event."""

from __future__ import annotations

from typing import Any


def small(**members: Any) -> dict[str, Any]:
    """A valid event with plain values in every required member; `members` replace whole
    members, and a member given as None is left out (an intake record or an alert rule's
    input needs no id or source)."""
    event: dict[str, Any] = {
        "id": "e-1",
        "time": "2026-01-01T00:00:01.000000000Z",
        "category": "access",
        "action": "get",
        "outcome": "success",
        "actor": {"kind": "user", "name": "alice"},
        "target": {"resource": "secrets"},
        "source": {"pod": "p"},
    }
    event.update(members)
    return {name: value for name, value in event.items() if value is not None}


def sample() -> dict[str, Any]:
    """A valid event with every member set, each object with all its members."""
    return small(
        id="evt-1",
        time="2026-11-29T16:08:52.5+01:00",
        actor={"kind": "user", "name": "alice", "ip": "10.0.0.7"},
        target={"resource": "secrets", "namespace": "shop", "name": "db"},
        source={"cluster": "c1", "namespace": "shop", "pod": "api-1", "container": "api"},
        correlation={"request_id": "r1", "trace_id": "t1"},
        details={"verb": "get", "bytes": 12, "ok": True, "tags": ["a", None]},
    )


def set_path(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set the member at `path` to `value`, making each missing or non-object parent an
    empty object first."""
    part: Any = event
    for key in path[:-1]:
        if not isinstance(part.get(key), dict):
            part[key] = {}
        part = part[key]
    part[path[-1]] = value
