"""Rule evaluation with state: thresholds over sliding windows, firing and resolution.

`Engine.observe` takes one event (a dict of the ledger's model) and returns what changed:
an alert that starts firing, or a firing alert that saw more events (at most once per
`resend_seconds`, so Alertmanager's copy does not expire). `Engine.tick` resolves alerts
whose rule saw no match for `resolveAfterSeconds`. Both are pure computation on the
caller's thread; delivery is the dispatcher's business (alerts/dispatch.py), so nothing
here can block intake.

Memory is bounded per rule: a group (one value of the rule's groupBy fields) keeps at most
`threshold.count` arrival times, and a rule keeps at most MAX_TIMESTAMPS // count groups
(at most MAX_GROUPS). A new group beyond that evicts the least recently seen group that
is not firing; when all are firing the new group is refused. Both are counted
(`evicted`, `refused`), never silent. Windows are measured on the clock of the machine
that evaluates, not on event times a sender chose.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from auditlock.alerts import template
from auditlock.alerts.rules import Rule, first_value

MAX_TIMESTAMPS = 100_000
MAX_GROUPS = 10_000
MAX_REFS = 10  # events named in an alert (the first ones; `count` says how many in all)
RESEND_SECONDS = 60.0
# Actor of the alert events auditlock writes itself; reserved (sidecar/pipeline/observers.py)
# so an app cannot forge one. Events of this actor are never evaluated: an alert about an
# alert would loop.
ALERT_ACTOR = "auditlock-alerts"

Change = Literal["fired", "updated", "resolved"]


@dataclass(frozen=True)
class EventRef:
    """Where an event that made an alert is in the trail."""

    stream: str
    id: str
    time: str
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": self.stream, "id": self.id, "time": self.time}
        if self.seq is not None:
            out["seq"] = self.seq
        return out


@dataclass(frozen=True)
class Alert:
    """One alert as delivered: its identity (labels), its text and its evidence."""

    rule: str  # rule key: <namespace>/<name> or builtin/<name>
    name: str  # alertname
    severity: str
    labels: dict[str, str]
    summary: str
    description: str
    starts_at: float
    ends_at: float | None = None  # set once resolved
    count: int = 1  # matches (event rules) or observations (state alerts) so far
    events: tuple[EventRef, ...] = ()
    pod: str | None = None  # the pod the alert is about, for its Kubernetes Event
    fingerprint: str = ""

    @property
    def resolved(self) -> bool:
        return self.ends_at is not None


@dataclass(frozen=True)
class Transition:
    change: Change
    alert: Alert


def fingerprint(labels: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(labels):
        digest.update(key.encode() + b"\x00" + labels[key].encode() + b"\x01")
    return digest.hexdigest()[:16]


def label_name(path: str) -> str:
    """The Alertmanager label for a groupBy field: dots become underscores."""
    return path.replace(".", "_")


def base_labels(rule: Rule, source: str) -> dict[str, str]:
    labels = dict(rule.labels)
    labels.update(
        {
            "alertname": rule.name,
            "severity": rule.severity,
            "rule": rule.key,
            "auditlock_source": source,
        }
    )
    if rule.namespace:
        labels["namespace"] = rule.namespace
    return labels


@dataclass
class _Group:
    times: deque[float]
    alert: Alert | None = None
    last_match: float = 0.0
    last_sent: float = 0.0
    refs: list[EventRef] = field(default_factory=list)


class _RuleState:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        count = rule.threshold.count if rule.threshold else 1
        self.capacity = max(1, min(MAX_GROUPS, MAX_TIMESTAMPS // count))
        self.groups: OrderedDict[tuple[str, ...], _Group] = OrderedDict()


class Engine:
    """Evaluates event rules; absence rules are the trail watcher's (alerts/watcher.py)."""

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        source: str,
        clock: Callable[[], float] = time.time,
        resend_seconds: float = RESEND_SECONDS,
    ) -> None:
        self.source = source
        self.clock = clock
        self.resend_seconds = resend_seconds
        self.evicted = 0
        self.refused = 0
        self.evaluated = 0
        self._states: dict[str, _RuleState] = {}
        self._by_category: dict[str, list[_RuleState]] = {}
        self._any_category: list[_RuleState] = []
        self.set_rules(rules)

    # -- rules ---------------------------------------------------------------------

    def set_rules(self, rules: Iterable[Rule]) -> list[Transition]:
        """Replace the rule set. A rule whose compiled form is unchanged keeps its state;
        alerts of removed or changed rules resolve (returned)."""
        now = self.clock()
        old = self._states
        self._states = {}
        for rule in rules:
            if rule.absence_seconds is not None:
                continue
            kept = old.get(rule.key)
            if kept is not None and kept.rule.digest == rule.digest:
                self._states[rule.key] = old.pop(rule.key)
            else:
                self._states[rule.key] = _RuleState(rule)
        gone: list[Transition] = []
        for state in old.values():
            for group in state.groups.values():
                if group.alert is not None:
                    gone.append(Transition("resolved", replace(group.alert, ends_at=now)))
        self._by_category = {}
        self._any_category = []
        for state in self._states.values():
            if state.rule.categories is None:
                self._any_category.append(state)
            else:
                for category in state.rule.categories:
                    self._by_category.setdefault(category, []).append(state)
        return gone

    @property
    def rules(self) -> list[Rule]:
        return [s.rule for s in self._states.values()]

    def actions(self) -> frozenset[str] | None:
        """The actions any rule can match; None when some rule matches any action."""
        found: set[str] = set()
        for state in self._states.values():
            if state.rule.actions is None:
                return None
            found |= state.rule.actions
        return frozenset(found)

    def categories(self) -> frozenset[str] | None:
        """The categories any rule can match; None when some rule matches any category
        (a caller holding encoded events may skip decoding the others)."""
        if self._any_category:
            return None
        return frozenset(self._by_category)

    def firing(self) -> list[Alert]:
        return [
            g.alert for s in self._states.values() for g in s.groups.values() if g.alert is not None
        ]

    # -- events --------------------------------------------------------------------

    def observe(
        self, event: dict[str, Any], stream: str, seq: int | None = None
    ) -> list[Transition]:
        """Evaluate every rule on one event."""
        category = event.get("category")
        states = self._by_category.get(category, ()) if type(category) is str else ()
        if not states and not self._any_category:
            return []
        actor = event.get("actor")
        if type(actor) is dict and actor.get("name") == ALERT_ACTOR:
            return []
        out: list[Transition] = []
        namespace: str | None = None
        for state in (*states, *self._any_category):
            rule = state.rule
            if rule.scope is not None:
                if namespace is None:
                    namespace = _namespace_of(event)
                if namespace not in rule.scope:
                    continue
            self.evaluated += 1
            if rule.matches(event):
                change = self._matched(state, event, stream, seq)
                if change is not None:
                    out.append(change)
        return out

    def _matched(
        self, state: _RuleState, event: dict[str, Any], stream: str, seq: int | None
    ) -> Transition | None:
        rule = state.rule
        now = self.clock()
        key = tuple(_label_text(first_value(event, p)) for p in rule.group_by)
        group = state.groups.get(key)
        if group is None:
            if not self._make_room(state):
                self.refused += 1
                return None
            count = rule.threshold.count if rule.threshold else 1
            group = state.groups[key] = _Group(times=deque(maxlen=count))
        else:
            state.groups.move_to_end(key)
        group.times.append(now)
        group.last_match = now
        ref = EventRef(stream, str(event.get("id", "")), str(event.get("time", "")), seq)
        if group.alert is not None:
            group.alert = replace(group.alert, count=group.alert.count + 1)
            if len(group.refs) < MAX_REFS:
                group.refs.append(ref)
                group.alert = replace(group.alert, events=tuple(group.refs))
            if now - group.last_sent >= self.resend_seconds:
                group.last_sent = now
                return Transition("updated", group.alert)
            return None
        group.refs.append(ref)
        del group.refs[:-MAX_REFS]
        threshold = rule.threshold
        if threshold is not None and (
            len(group.times) < threshold.count or now - group.times[0] > threshold.window
        ):
            return None
        group.alert = self._new_alert(rule, key, event, stream, now, len(group.times), group.refs)
        group.last_sent = now
        return Transition("fired", group.alert)

    def _make_room(self, state: _RuleState) -> bool:
        if len(state.groups) < state.capacity:
            return True
        for key, group in state.groups.items():
            if group.alert is None:
                del state.groups[key]
                self.evicted += 1
                return True
        return False

    def _new_alert(
        self,
        rule: Rule,
        key: tuple[str, ...],
        event: dict[str, Any],
        stream: str,
        now: float,
        count: int,
        refs: list[EventRef],
    ) -> Alert:
        labels = base_labels(rule, self.source)
        for path, value in zip(rule.group_by, key, strict=True):
            labels[label_name(path)] = value
        labels["stream"] = stream
        if rule.scope is None:  # a rule for every namespace: the event's namespace routes
            namespace = _namespace_of(event)
            if namespace:
                labels["namespace"] = namespace
            else:
                labels.pop("namespace", None)
        pod = _pod_of(event)
        values = {
            "count": count,
            "window": f"{rule.threshold.window:g}s" if rule.threshold else "",
            "stream": stream,
            "rule": rule.key,
            "namespace": rule.namespace,
        }

        def lookup(path: str) -> Any:
            return first_value(event, path)

        return Alert(
            rule=rule.key,
            name=rule.name,
            severity=rule.severity,
            labels=labels,
            summary=template.render(rule.summary, lookup, values),
            description=template.render(rule.description, lookup, values),
            starts_at=now,
            count=count,
            events=tuple(refs),
            pod=pod,
            fingerprint=fingerprint(labels),
        )

    # -- time ----------------------------------------------------------------------

    def tick(self) -> list[Transition]:
        """Resolve alerts whose rule has seen no match for resolveAfterSeconds, and drop
        groups whose window has passed (they hold nothing worth keeping)."""
        now = self.clock()
        out: list[Transition] = []
        for state in self._states.values():
            rule = state.rule
            window = rule.threshold.window if rule.threshold else 0.0
            stale: list[tuple[str, ...]] = []
            for key, group in state.groups.items():
                if group.alert is not None:
                    if now - group.last_match >= rule.resolve_after:
                        out.append(Transition("resolved", replace(group.alert, ends_at=now)))
                        stale.append(key)
                    elif now - group.last_sent >= self.resend_seconds:
                        group.last_sent = now
                        out.append(Transition("updated", group.alert))
                elif now - group.last_match > window:
                    stale.append(key)
            for key in stale:
                del state.groups[key]
        return out


def _label_text(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text[: template.MAX_VALUE_CHARS]


def _namespace_of(event: dict[str, Any]) -> str | None:
    for member in ("target", "source"):
        part = event.get(member)
        if type(part) is dict and part.get("namespace"):
            return str(part["namespace"])
    return None


def _pod_of(event: dict[str, Any]) -> str | None:
    source = event.get("source")
    if type(source) is dict and source.get("pod"):
        return str(source["pod"])
    target = event.get("target")
    if (
        type(target) is dict
        and str(target.get("resource", "")).startswith("pods")
        and target.get("name")
    ):
        return str(target["name"])
    return None
