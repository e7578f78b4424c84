"""Alert rules on this pod's events, evaluated in the collector (docs/alerts.md).

The intake tells its taps about every durable commit; this tap only appends the commit's
encoded events to a bounded queue and returns, as a tap must. A task evaluates them:
an event is decoded only when its action and category are ones some rule can match (read
from the canonical JSON's bytes, `_member_text`, without decoding), then run through the
engine. Alerts go to the trail (an `alert` event committed to this collector's own
intake, so it is chained and signed into this pod's stream) and to Alertmanager when the
rules file names one. A queue that is full drops the oldest events from evaluation,
counted (`auditlock_sidecar_alert_events_dropped_total`): alerting may fall behind, intake
never waits for it.

Rules come from a JSON file the operator keeps in the policy's ConfigMap, re-read when it
changes; a file that does not parse or a rule that does not compile is logged and
counted, and the rules in force stay as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from typing import Any

import orjson

from auditlock.alerts import builtin
from auditlock.alerts.dispatch import Dispatcher, DispatchMetrics
from auditlock.alerts.engine import Engine, Transition
from auditlock.alerts.receivers import Receiver, ReceiverError
from auditlock.alerts.receivers.alertmanager import AlertmanagerReceiver
from auditlock.alerts.receivers.trail import TrailReceiver
from auditlock.alerts.rules import Rule, compile_rule
from auditlock.alerts.state import StateAlerts
from auditlock.metric_factory import MetricFactory
from auditlock.sidecar.config import AlertsConfig, SourceIdentity
from auditlock.sidecar.intake import Accepted, Intake
from auditlock.sidecar.metrics import NS, Metrics

log = logging.getLogger("auditlock.sidecar.alerting")

ALERT_INPUT = "alerts"
ALERT_TAG = "auditlock.alerts"  # a reserved prefix: no app may send under it
MAX_RULES_FILE = 1024 * 1024


class CollectorAlerts:
    def __init__(
        self,
        config: AlertsConfig,
        intake: Intake,
        metrics: Metrics,
        stream: str,
        source: SourceIdentity | None = None,
    ) -> None:
        self.config = config
        self.intake = intake
        self.stream = stream
        self.metrics = metrics
        self.source = source
        self.engine = Engine(source="collector", resend_seconds=config.resend_seconds)
        self.states = StateAlerts(source="collector", resend_seconds=config.resend_seconds)
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rules_stamp: tuple[int, int] | None = None
        self._alertmanager_url: str | None = None
        # What an event's top-level category and action must be for some rule to match
        # (None: anything); `_any_rules` False: no rules, nothing is evaluated.
        self._any_rules = False
        self._categories: frozenset[bytes] | None = None
        self._actions: frozenset[bytes] | None = None
        m = MetricFactory(metrics.registry, NS)
        self.dropped = m.counter(
            "alert_events_dropped",
            "Events not evaluated by alert rules because the evaluation queue was full.",
        )
        self.rule_errors = m.counter(
            "alert_rule_errors",
            "Rules files or rules that could not be loaded (the previous rules stay).",
        )
        self.rules_loaded = m.gauge("alert_rules", "Alert rules in force.")
        self._dispatch_metrics = DispatchMetrics(metrics.registry, NS)
        self.dispatcher = self._dispatcher()

    def _dispatcher(self) -> Dispatcher:
        receivers: list[Receiver] = [TrailReceiver(self._store)]
        if self._alertmanager_url:
            receivers.append(AlertmanagerReceiver(self._alertmanager_url))
        return Dispatcher(receivers, self._dispatch_metrics)

    # -- the tap -----------------------------------------------------------------------

    def tap(self, accepted: Accepted) -> None:
        if accepted.input_name == ALERT_INPUT or not self._any_rules:
            return
        queue = self._queue
        events = accepted.events
        limit = self.config.queue_events
        excess = len(queue) + len(events) - limit
        if excess > 0:  # the oldest first: newer events matter more to an on-call
            self.dropped.inc(excess)
            if len(events) >= limit:
                queue.clear()
                events = events[-limit:]
            else:
                for _ in range(excess):
                    queue.popleft()
        queue.extend(events)
        self._wake.set()

    # -- running -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.reload()
        self.dispatcher.start()
        self._tasks = [
            asyncio.create_task(self._evaluate_forever(), name="alerts-evaluate"),
            asyncio.create_task(
                self._every(self.config.tick_seconds, self._tick), name="alerts-tick"
            ),
            asyncio.create_task(
                self._every(self.config.reload_seconds, self.reload), name="alerts-reload"
            ),
        ]
        self.intake.add_tap(self.tap, "alerts")

    async def _every(self, seconds: float, step: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await step()
            except Exception:
                log.exception("alerting step failed")

    async def _tick(self) -> None:
        self.dispatcher.submit([*self.engine.tick(), *self.health_alerts()])

    def health_alerts(self) -> list[Transition]:
        """The collector's own built-ins: spool filling, uploads failing. Measured here,
        where the numbers are, so they reach Alertmanager without a Prometheus."""
        labels = {"stream": self.stream}
        pod = None
        if self.source is not None:
            if self.source.namespace:
                labels["namespace"] = self.source.namespace
            if self.source.pod:
                labels["pod"] = pod = self.source.pod
        fill = self.intake.spool.fill_ratio
        since = self.metrics.destination_failing_since
        failing = 0.0 if since is None else time.monotonic() - since
        changes = [
            self.states.observe_builtin(
                builtin.SPOOL_FILLING,
                labels,
                fill > self.config.spool_filling_ratio,
                f"Spool of stream {self.stream} is {fill:.0%} full (alert above "
                f"{self.config.spool_filling_ratio:.0%}): uploads are not keeping up, intake "
                "will push back when it is full",
                pod=pod,
            ),
            self.states.observe_builtin(
                builtin.UPLOADS_FAILING,
                labels,
                failing > self.config.uploads_failing_seconds,
                f"Uploads of stream {self.stream} have failed for {failing:.0f} s: events "
                "wait in the spool",
                pod=pod,
            ),
        ]
        return [c for c in changes if c is not None]

    async def _evaluate_forever(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
            changes: list[Transition] = []
            # A slice at a time, then yield: evaluation shares the loop with intake.
            for _ in range(min(len(queue), 1000)):
                changes.extend(self._evaluate(queue.popleft()))
            if changes:
                self.dispatcher.submit(changes)
            await asyncio.sleep(0)

    def _evaluate(self, data: bytes) -> list[Transition]:
        actions = self._actions
        if actions is not None:
            value = _member_text(data, b'"action":"')
            if value is not None and value not in actions:
                return []
        categories = self._categories
        if categories is not None:
            value = _member_text(data, b'"category":"')
            if value is not None and value not in categories:
                return []
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        return self.engine.observe(event, self.stream)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.shutdown()

    # -- the trail receiver --------------------------------------------------------------

    async def _store(self, events: list[dict[str, Any]]) -> None:
        now = time.time_ns()
        prepared = self.intake.prepare(ALERT_INPUT, [(ALERT_TAG, now, e) for e in events])
        if prepared.rejected_count:
            raise ReceiverError(f"alert events refused by the pipeline: {prepared.rejected[:1]}")
        try:
            await self.intake.commit(ALERT_INPUT, [(prepared, None)])
        except Exception as exc:
            raise ReceiverError(f"alert events not spooled: {exc}") from exc

    # -- rules ---------------------------------------------------------------------------

    async def reload(self) -> None:
        path = self.config.rules_file
        if path is None:
            return
        try:
            info = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            if self._rules_stamp is not None:
                self._apply([], None)
                self._rules_stamp = None
            return
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._rules_stamp:
            return
        self._rules_stamp = stamp
        try:
            if info.st_size > MAX_RULES_FILE:
                raise ValueError(f"larger than {MAX_RULES_FILE} bytes")
            data = orjson.loads(await asyncio.to_thread(_read, path))
            rules = [
                compile_rule(str(r["name"]), str(r["namespace"]), dict(r["spec"]))
                for r in data.get("rules") or []
            ]
        except Exception as exc:
            self.rule_errors.inc()
            log.error("alert rules file %s not loaded (the rules in force stay): %s", path, exc)
            return
        self._apply(rules, data.get("alertmanager_url") or None)

    def _apply(self, rules: list[Rule], alertmanager_url: str | None) -> None:
        event_rules = [r for r in rules if r.absence_seconds is None]
        gone = self.engine.set_rules(event_rules)
        self._any_rules = bool(event_rules)
        categories, actions = self.engine.categories(), self.engine.actions()
        self._categories = None if categories is None else frozenset(c.encode() for c in categories)
        self._actions = None if actions is None else frozenset(a.encode() for a in actions)
        self.rules_loaded.set(len(event_rules))
        if alertmanager_url != self._alertmanager_url:
            old = self.dispatcher
            self._alertmanager_url = alertmanager_url
            self.dispatcher = self._dispatcher()
            self.dispatcher.start()
            task = asyncio.create_task(old.close())
            self._tasks.append(task)
        self.dispatcher.submit(gone)
        log.info("alert rules loaded: %d", len(event_rules))


def _member_text(data: bytes, prefix: bytes) -> bytes | None:
    """The text of the first `"<member>":"..."` in an event's canonical JSON, or None when
    it cannot be read without decoding (absent, or escaped). The first occurrence is the
    top-level member's: canonical JSON (RFC 8785) sorts members, `action` comes first,
    and before `category` stands only `actor`, whose members are fixed (kind, name, ip);
    a string value cannot hold an unescaped quote."""
    start = data.find(prefix)
    if start < 0:
        return None
    start += len(prefix)
    end = data.find(b'"', start)
    if end < 0:
        return None
    value = data[start:end]
    return None if b"\\" in value else value


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(MAX_RULES_FILE + 1)
