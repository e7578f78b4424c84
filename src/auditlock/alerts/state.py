"""Alerts on states rather than events: "this stream is silent", "this destination has
no lock". The caller says, each time it looks, whether each condition holds; this turns
that into fired, updated (resent) and resolved transitions, keyed by the labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from auditlock.alerts.builtin import STATE_SEVERITY
from auditlock.alerts.engine import (
    RESEND_SECONDS,
    Alert,
    EventRef,
    Transition,
    fingerprint,
)


@dataclass(kw_only=True)
class StateAlerts:
    source: str
    clock: Callable[[], float] = time.time
    resend_seconds: float = RESEND_SECONDS
    # fingerprint -> (alert, last sent)
    _firing: dict[str, tuple[Alert, float]] = field(default_factory=dict, init=False, repr=False)

    def firing(self) -> list[Alert]:
        return [alert for alert, _ in self._firing.values()]

    def key(self, name: str, severity: str, labels: dict[str, str]) -> str:
        """The fingerprint `observe` files this condition under (for `resolve_missing`)."""
        return fingerprint(self._labels(name, severity, labels))

    def builtin_key(self, name: str, labels: dict[str, str]) -> str:
        """`key` of a built-in state alert (builtin.STATE_SEVERITY)."""
        return self.key(name, STATE_SEVERITY[name], labels)

    def _labels(self, name: str, severity: str, labels: dict[str, str]) -> dict[str, str]:
        return {
            **labels,
            "alertname": name,
            "severity": severity,
            "rule": f"builtin/{name}",
            "auditlock_source": self.source,
        }

    def observe(
        self,
        name: str,
        severity: str,
        labels: dict[str, str],
        holds: bool,
        summary: str,
        *,
        description: str = "",
        events: tuple[EventRef, ...] = (),
        pod: str | None = None,
    ) -> Transition | None:
        """Whether the condition `name` with `labels` holds now; a transition or None."""
        now = self.clock()
        full = self._labels(name, severity, labels)
        key = fingerprint(full)
        current = self._firing.get(key)
        if not holds:
            if current is None:
                return None
            del self._firing[key]
            return Transition("resolved", replace(current[0], ends_at=now))
        if current is not None:
            alert, sent = current
            alert = replace(alert, summary=summary, count=alert.count + 1)
            if now - sent >= self.resend_seconds:
                self._firing[key] = (alert, now)
                return Transition("updated", alert)
            self._firing[key] = (alert, sent)
            return None
        alert = Alert(
            rule=f"builtin/{name}",
            name=name,
            severity=severity,
            labels=full,
            summary=summary,
            description=description,
            starts_at=now,
            events=events,
            pod=pod,
            fingerprint=key,
        )
        self._firing[key] = (alert, now)
        return Transition("fired", alert)

    def observe_builtin(
        self, name: str, labels: dict[str, str], holds: bool, summary: str, **options: Any
    ) -> Transition | None:
        """`observe` a built-in state alert, at its severity (builtin.STATE_SEVERITY)."""
        return self.observe(name, STATE_SEVERITY[name], labels, holds, summary, **options)

    def resolve_missing(self, name: str, seen: set[str]) -> list[Transition]:
        """Resolve the firing alerts of `name` whose fingerprint is not in `seen` (their
        subject is gone: a stream closed, a policy deleted)."""
        now = self.clock()
        out = []
        for key, (alert, _) in list(self._firing.items()):
            if alert.name == name and key not in seen:
                del self._firing[key]
                out.append(Transition("resolved", replace(alert, ends_at=now)))
        return out
