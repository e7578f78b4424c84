"""The engine: thresholds over sliding windows per group, resolution, bounded memory."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.alerts import engine as engine_module
from auditlock.alerts.engine import ALERT_ACTOR, Engine
from auditlock.alerts.model import parse_rule_spec, plain_spec
from auditlock.alerts.rules import Rule, compile_rule, values_at


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rule(name: str = "denied", **spec: Any) -> Rule:
    base: dict[str, Any] = {
        "summary": "{{ count }} refusals for {{ actor.name }} in {{ window }}",
        "match": [
            {"field": "category", "equals": "authorization"},
            {"field": "outcome", "equals": "failure"},
        ],
    }
    base.update(spec)
    return compile_rule(name, "team", plain_spec(parse_rule_spec(base)))


def _event(actor: str = "alice", n: int = 0, **extra: Any) -> dict[str, Any]:
    event = {
        "id": f"e{n}",
        "time": "2026-11-30T20:00:00Z",
        "category": "authorization",
        "outcome": "failure",
        "action": "create",
        "actor": {"kind": "user", "name": actor},
        "target": {"resource": "rolebindings", "namespace": "team"},
    }
    event.update(extra)
    return event


def test_threshold_fires_once_per_group_within_the_window() -> None:
    clock = Clock()
    rule = _rule(groupBy=["actor.name"], threshold={"count": 3, "windowSeconds": 60})
    engine = Engine([rule], source="operator", clock=clock)
    changes = []
    for n in range(5):
        clock.now += 1
        changes += engine.observe(_event("alice", n), "s1")
    fired = [c for c in changes if c.change == "fired"]
    assert len(fired) == 1
    alert = fired[0].alert
    assert alert.labels["actor_name"] == "alice" and alert.labels["alertname"] == "denied"
    assert alert.labels["namespace"] == "team" and alert.labels["stream"] == "s1"
    assert alert.summary == "3 refusals for alice in 60s"
    assert [r.id for r in alert.events] == ["e0", "e1", "e2"]
    assert engine.firing()[0].count == 5
    # bob's count is his own
    assert engine.observe(_event("bob", 9), "s1") == []


def test_matches_spread_wider_than_the_window_do_not_fire() -> None:
    clock = Clock()
    engine = Engine(
        [_rule(threshold={"count": 3, "windowSeconds": 10})], source="operator", clock=clock
    )
    for n in range(10):
        clock.now += 6
        assert engine.observe(_event(n=n), "s") == []


def test_an_alert_resolves_after_quiet_and_is_resent_while_firing() -> None:
    clock = Clock()
    engine = Engine(
        [_rule(resolveAfterSeconds=30)], source="collector", clock=clock, resend_seconds=10
    )
    assert engine.observe(_event(), "s")[0].change == "fired"
    clock.now += 11
    assert [c.change for c in engine.tick()] == ["updated"]
    clock.now += 5
    assert engine.tick() == []
    clock.now += 15
    (resolved,) = engine.tick()
    assert resolved.change == "resolved" and resolved.alert.ends_at == clock.now
    assert engine.firing() == []


def test_rules_only_see_their_category_scope_and_never_alert_events() -> None:
    clock = Clock()
    rule = compile_rule(
        "any",
        "team",
        {"summary": "x", "match": [{"field": "actor.kind", "equals": "user"}]},
        scope=frozenset({"team"}),
    )
    engine = Engine([rule], source="operator", clock=clock)
    assert engine.categories() is None
    assert engine.observe(_event(target={"resource": "x", "namespace": "other"}), "s") == []
    assert engine.observe(_event(actor=ALERT_ACTOR), "s") == []
    assert engine.observe(_event(), "s")[0].change == "fired"


def test_lists_on_a_path_fan_out() -> None:
    event = {"details": {"rules": [{"verbs": ["get"]}, {"verbs": ["*", "list"]}]}}
    assert values_at(event, ("details", "rules", "verbs")) == ["get", "*", "list"]
    rule = compile_rule(
        "wild",
        "team",
        {"summary": "x", "match": [{"field": "details.rules.verbs", "equals": "*"}]},
    )
    assert rule.matches(event)
    assert not rule.matches({"details": {"rules": [{"verbs": ["get"]}]}})


def test_groups_are_capped_evicting_quiet_ones_and_counted(monkeypatch: Any) -> None:
    monkeypatch.setattr(engine_module, "MAX_TIMESTAMPS", 40)
    clock = Clock()
    engine = Engine(
        [_rule(groupBy=["actor.name"], threshold={"count": 4, "windowSeconds": 60})],
        source="operator",
        clock=clock,
    )
    for n in range(100):
        engine.observe(_event(f"user{n}", n), "s")
    state = engine._states["team/denied"]
    assert len(state.groups) == 10
    assert engine.evicted == 90


def test_changed_rules_resolve_their_alerts_and_unchanged_keep_state() -> None:
    clock = Clock()
    rule = _rule()
    engine = Engine([rule], source="operator", clock=clock)
    engine.observe(_event(), "s")
    assert engine.set_rules([rule]) == []
    assert len(engine.firing()) == 1
    (gone,) = engine.set_rules([_rule(severity="critical")])
    assert gone.change == "resolved"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 30)), max_size=60),
    st.integers(1, 5),
    st.integers(1, 60),
)
def test_fires_exactly_when_count_matches_fall_within_the_window(
    arrivals: list[tuple[str, float]], count: int, window: int
) -> None:
    clock = Clock()
    engine = Engine(
        [
            _rule(
                groupBy=["actor.name"],
                threshold={"count": count, "windowSeconds": window},
                resolveAfterSeconds=86400,
            )
        ],
        source="operator",
        clock=clock,
    )
    seen: dict[str, list[float]] = {}
    expected: set[str] = set()
    got: set[str] = set()
    for actor, gap in arrivals:
        clock.now += gap
        times = seen.setdefault(actor, [])
        times.append(clock.now)
        if len(times) >= count and times[-1] - times[-count] <= window:
            expected.add(actor)
        for change in engine.observe(_event(actor), "s"):
            if change.change == "fired":
                assert change.alert.labels["actor_name"] not in got
                got.add(change.alert.labels["actor_name"])
    assert got == expected
