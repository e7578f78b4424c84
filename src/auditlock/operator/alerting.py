"""The operator's alerting: rules on API-server events, and the trail watcher.

- **API-server events.** `ClusterCapture` hands every batch it has stored (durable in
  the operator's collector) to `observe`; the engine runs the built-in security rules and
  the AuditAlertRules of the events' namespaces (and those of the operator's own
  namespace, which apply to every namespace).
- **The trail watcher.** Every `watch_seconds` it reads, for each policy, the newest
  checkpoint of each of its streams straight from the destination
  (`operator.destination.read_newest` over `auditlock.ledger.newest`, the one place that
  reading lives, shared with the witness and the periodic refresh), and
  the policy's status: a stream silent past twice its heartbeat, a checkpoint that does
  not decode or whose signature fails, a destination without the lock the policy asks
  for, a trail that failed verification, selected pods without a collector. It does not
  ask the collectors, so a collector that is killed or silenced is still caught.

Transitions go to the dispatcher (alerts/dispatch.py): the trail (alert events through
the operator's collector, like every API event), Alertmanager, the webhook and
Kubernetes Events on the policy and the pod. Nothing here runs inside the audit webhook's
answer: `observe` evaluates and queues, delivery happens in the dispatcher's tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from auditlock import sinks
from auditlock.alerts import builtin
from auditlock.alerts.dispatch import Dispatcher, DispatchMetrics
from auditlock.alerts.engine import Engine, EventRef, Transition
from auditlock.alerts.patterns import compile_glob
from auditlock.alerts.receivers import Receiver, ReceiverError
from auditlock.alerts.receivers.alertmanager import AlertmanagerReceiver
from auditlock.alerts.receivers.trail import TrailReceiver
from auditlock.alerts.receivers.webhook import WebhookReceiver
from auditlock.alerts.rules import Rule, compile_rule
from auditlock.alerts.state import StateAlerts
from auditlock.ledger.newest import StreamTip
from auditlock.metric_factory import MetricFactory
from auditlock.operator.destination import open_options, read_newest
from auditlock.operator.names import ALERT_RULES_FILE, config_map_name
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.stream_ids import pod_of_stream

log = logging.getLogger("auditlock.operator.alerting")

Store = Callable[[list[dict[str, Any]]], Awaitable[None]]
SecretReader = Callable[[str, str], dict[str, str] | None]
StatusReader = Callable[[str, str], dict[str, Any] | None]


@dataclass
class AlertSettings:
    """How the operator alerts (chart values `alerts.*`, `auditlock operator run` flags)."""

    enabled: bool = True
    alertmanager_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: bytes | None = None
    disabled_builtins: frozenset[str] = frozenset()
    # How long a built-in event alert fires after its last matching event.
    builtin_resolve_seconds: float = 300.0
    # The operator's own identity: its status and annotation patches of AuditPolicies
    # are not "AuditPolicy changed".
    own_identities: tuple[str, ...] = ()
    # AuditAlertRules in this namespace apply to every namespace (the operator's own).
    cluster_rules_namespace: str | None = None
    # 2 x heartbeat + this + dispatch stays within the 2 x heartbeat + 30 s promised.
    watch_seconds: float = 25.0
    tick_seconds: float = 5.0
    resend_seconds: float = 60.0
    kube_events: bool = True
    # The operator's collector's stream, named in the evidence of API-event alerts; the
    # runner sets <cluster>_<namespace>_<pod> from the pod's environment when it can.
    own_stream: str = "operator"


@dataclass
class _UserRule:
    namespace: str
    name: str
    rule: Rule
    spec: dict[str, Any]


@dataclass
class RuleCounts:
    firing: int = 0
    last_fired: float | None = None


class OperatorAlerts:
    def __init__(
        self,
        settings: AlertSettings,
        policies: PolicyRegistry,
        *,
        cluster: str,
        metrics: CollectorRegistry,
        store: Store | None = None,
        kube: Any | None = None,
        read_secret: SecretReader | None = None,
        read_status: StatusReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.cluster = cluster
        self.kube = kube
        self.read_secret = read_secret
        self.read_status = read_status
        self.clock = clock
        self.engine = Engine(source="operator", clock=clock, resend_seconds=settings.resend_seconds)
        self.states = StateAlerts(
            source="operator", clock=clock, resend_seconds=settings.resend_seconds
        )
        self._builtins = builtin.event_rules(
            settings.disabled_builtins,
            ignore_actors=settings.own_identities,
            resolve_after=settings.builtin_resolve_seconds,
        )
        self._user: dict[tuple[str, str], _UserRule] = {}
        self._absence: list[Rule] = []
        self.counts: dict[str, RuleCounts] = {}
        receivers: list[Receiver] = []
        if store is not None:
            receivers.append(TrailReceiver(store))
        if settings.alertmanager_url:
            receivers.append(AlertmanagerReceiver(settings.alertmanager_url))
        if settings.webhook_url:
            receivers.append(WebhookReceiver(settings.webhook_url, settings.webhook_secret or b""))
        if kube is not None and settings.kube_events:
            receivers.append(KubeEventReceiver(kube, policies))
        self.dispatcher = Dispatcher(receivers, DispatchMetrics(metrics, "auditlock_operator"))
        m = MetricFactory(metrics, "auditlock_operator")
        self.watch_errors = m.counter(
            "trail_watch_errors",
            "Trail watcher passes that could not read a policy's destination, by reason.",
            ["reason"],
        )
        self.evaluation_errors = m.counter(
            "alert_evaluation_errors",
            "Events whose evaluation raised (logged; the event is stored regardless).",
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_rules()

    # -- rules -----------------------------------------------------------------------

    def set_rule(self, namespace: str, name: str, spec: dict[str, Any] | None) -> None:
        """Add, replace (spec) or remove (None) an AuditAlertRule; `spec` is validated."""
        key = (namespace, name)
        if spec is None:
            self._user.pop(key, None)
        else:
            everywhere = namespace == self.settings.cluster_rules_namespace
            scope = None if everywhere else frozenset({namespace})
            self._user[key] = _UserRule(
                namespace, name, compile_rule(name, namespace, spec, scope=scope), spec
            )
        self._refresh_rules()

    def _refresh_rules(self) -> None:
        user = [u.rule for u in self._user.values()]
        self._absence = [r for r in user if r.absence_seconds is not None]
        self._submit(self.engine.set_rules([*self._builtins, *user]))

    # -- events ----------------------------------------------------------------------

    def observe(self, events: Sequence[dict[str, Any]], stream: str | None = None) -> None:
        """Evaluate stored events; never raises (a bad rule or event is counted)."""
        stream = stream or self.settings.own_stream
        changes: list[Transition] = []
        for event in events:
            try:
                changes.extend(self.engine.observe(event, stream))
            except Exception:
                self.evaluation_errors.inc()
                log.exception("alert evaluation failed (the event is stored)")
        self._submit(changes)

    def _submit(self, changes: list[Transition]) -> None:
        if not changes:
            return
        for change in changes:
            counts = self.counts.setdefault(change.alert.rule, RuleCounts())
            if change.change == "fired":
                counts.firing += 1
                counts.last_fired = change.alert.starts_at
            elif change.change == "resolved":
                counts.firing = max(0, counts.firing - 1)
        self.dispatcher.submit(changes)

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        self.dispatcher.start()
        self._tasks = [
            asyncio.create_task(
                self._every(self.settings.tick_seconds, self._tick), name="alerts-tick"
            ),
            asyncio.create_task(
                self._every(self.settings.watch_seconds, self.watch_once), name="trail-watcher"
            ),
        ]

    async def _every(self, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await step()
            except Exception:
                log.exception("alerting step %s failed; next in %.0f s", step.__name__, seconds)

    async def _tick(self) -> None:
        self._submit(self.engine.tick())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.shutdown()

    # -- the trail watcher -----------------------------------------------------------

    async def watch_once(self) -> None:
        """One pass over every policy: its streams' newest checkpoints and its status."""
        for namespace in sorted(self.policies.namespaces()):
            for entry in self.policies.in_namespace(namespace):
                await self._watch_one(entry)

    async def _watch_one(self, entry: PolicyEntry) -> None:
        try:
            await self._watch_policy(entry)
        except Exception as exc:
            self.watch_errors.labels(type(exc).__name__).inc()
            log.warning("trail watch of %s/%s failed: %s", entry.namespace, entry.name, exc)

    async def _watch_policy(self, entry: PolicyEntry) -> None:
        status = (
            await asyncio.to_thread(self.read_status, entry.namespace, entry.name)
            if self.read_status is not None
            else None
        )
        self._status_alerts(entry, status or {})
        tips = await asyncio.to_thread(self._read_tips, entry)
        if tips is None:
            return
        self._stream_alerts(entry, tips)

    def _read_tips(self, entry: PolicyEntry) -> dict[str, StreamTip] | None:
        url = entry.spec.destination.url
        secret_name = _credentials_secret(entry)
        secret = (
            self.read_secret(entry.namespace, secret_name)
            if secret_name and self.read_secret is not None
            else None
        )
        try:
            destination = sinks.open(entry.spec.destination.url, **open_options(entry.spec, secret))
        except sinks.DestinationError as exc:
            self.watch_errors.labels("destination_invalid").inc()
            log.warning("trail watch: %s", exc)
            return None
        try:
            return read_newest(url, destination)
        except (sinks.DestinationError, OSError) as exc:
            self.watch_errors.labels("destination_unreachable").inc()
            log.warning("trail watch of %s: %s", entry.spec.destination.url, exc)
            return None
        finally:
            with contextlib.suppress(Exception):
                destination.close()

    def _stream_alerts(self, entry: PolicyEntry, tips: dict[str, StreamTip]) -> None:
        now = self.clock()
        changes: list[Transition] = []
        seen_silent: set[str] = set()
        absence = [r for r in self._absence if r.namespace == entry.namespace]
        for stream, tip in sorted(tips.items()):
            pod = pod_of_stream(self.cluster, entry.namespace, stream)
            if pod is None:
                continue  # another cluster's or namespace's stream in a shared prefix
            labels = {"namespace": entry.namespace, "policy": entry.name, "stream": stream}
            if pod:
                labels["pod"] = pod
            changes += _some(  # a usable one resolves an earlier CheckpointInvalid
                self.states.observe_builtin(
                    builtin.CHECKPOINT_INVALID,
                    labels,
                    tip.signed is None,
                    f"Newest checkpoint of stream {stream} is unusable: {tip.problem}",
                    pod=pod,
                )
            )
            if tip.signed is None:
                continue
            checkpoint = tip.signed.checkpoint
            if checkpoint.closed:
                continue
            age = now - checkpoint.time_ns / 1e9
            heartbeat = max(checkpoint.heartbeat_ms / 1000.0, 1.0)
            limit = builtin.SILENT_HEARTBEATS * heartbeat
            ref = (
                EventRef(
                    stream, f"checkpoint-{checkpoint.epoch}-{checkpoint.index}", checkpoint.time,
                    checkpoint.tree_size - 1 if checkpoint.tree_size else None,
                ),
            )  # fmt: skip
            silent = age > limit
            seen_silent.add(self.states.builtin_key(builtin.STREAM_SILENT, labels))
            changes += _some(
                self.states.observe_builtin(
                    builtin.STREAM_SILENT,
                    labels,
                    silent and builtin.STREAM_SILENT not in self.settings.disabled_builtins,
                    f"Stream {stream} has written no event and no checkpoint for "
                    f"{age:.0f} s (heartbeat {heartbeat:.0f} s): its collector is down, "
                    "stuck or silenced",
                    description="The newest checkpoint in the destination is named in "
                    "the alert's events; the collector should checkpoint at least every "
                    "heartbeat even when idle.",
                    events=ref,
                    pod=pod,
                )
            )
            for rule in absence:
                if not compile_glob(rule.absence_streams).match(stream):
                    continue
                assert rule.absence_seconds is not None
                rule_labels = {**rule.labels, **labels, "rule_namespace": rule.namespace}
                changes += _some(
                    self.states.observe(
                        rule.name,
                        rule.severity,
                        rule_labels,
                        age > rule.absence_seconds,
                        rule.summary.replace("{{ stream }}", stream),
                        events=ref,
                        pod=pod,
                    )
                )
        changes += [
            t
            for t in self.states.resolve_missing(builtin.STREAM_SILENT, seen_silent)
            if t.alert.labels.get("policy") == entry.name
            and t.alert.labels.get("namespace") == entry.namespace
        ]
        self._submit(changes)

    def _status_alerts(self, entry: PolicyEntry, status: dict[str, Any]) -> None:
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        labels = {"namespace": entry.namespace, "policy": entry.name}
        checks = [
            (
                builtin.RETENTION_LOCK_MISSING,
                conditions.get("DestinationLocked", {}).get("status") == "False",
                "Destination of AuditPolicy {ns}/{name} does not enforce the retention the "
                "policy asks for: "
                + str(conditions.get("DestinationLocked", {}).get("message", "")),
            ),
            (
                builtin.TRAIL_NOT_VERIFIED,
                conditions.get("TrailVerified", {}).get("status") == "False",
                "The trail of AuditPolicy {ns}/{name} failed verification: "
                + str(conditions.get("TrailVerified", {}).get("message", "")),
            ),
            (
                builtin.PODS_UNAUDITED,
                int(status.get("podsUnaudited") or 0) > 0,
                f"{int(status.get('podsUnaudited') or 0)} selected pod(s) of AuditPolicy "
                "{ns}/{name} run without a collector: "
                + str(conditions.get("AllPodsAudited", {}).get("message", "")),
            ),
        ]
        changes: list[Transition] = []
        for name, holds, text in checks:
            if name in self.settings.disabled_builtins:
                holds = False
            summary = text.replace("{ns}", entry.namespace).replace("{name}", entry.name)
            changes += _some(self.states.observe_builtin(name, labels, holds, summary[:1024]))
        self._submit(changes)

    # -- rules for the collectors -----------------------------------------------------

    def rules_file(self, namespace: str) -> str:
        """The collectors' rules file for a namespace: its event rules (absence rules are
        the watcher's) and where Alertmanager is. No secret goes here: the webhook is
        the operator's alone."""
        rules = [
            {"name": u.name, "namespace": u.namespace, "spec": u.spec}
            for (ns, _), u in sorted(self._user.items())
            if ns == namespace and u.rule.absence_seconds is None
        ]
        body = {"rules": rules, "alertmanager_url": self.settings.alertmanager_url}
        return json.dumps(body, sort_keys=True)

    def publish_rules(self, namespace: str) -> None:
        """Put the namespace's rules file into each of its policies' ConfigMaps (a merge
        patch of one key; the kubelet updates the mounted file, the collector re-reads
        it). Blocking: call in a thread."""
        if self.kube is None:
            return
        text = self.rules_file(namespace)
        for policy in self.policies.in_namespace(namespace):
            name = config_map_name(policy.name)
            try:
                current = self.kube.core.read_namespaced_config_map(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    continue  # reconcile has not written it yet; the next pass will
                raise
            if (current.data or {}).get(ALERT_RULES_FILE) != text:
                self.kube.core.patch_namespaced_config_map(
                    name, namespace, {"data": {ALERT_RULES_FILE: text}}
                )

    # -- status of AuditAlertRules ---------------------------------------------------

    def rule_status(self, namespace: str, name: str) -> dict[str, Any]:
        counts = self.counts.get(f"{namespace}/{name}", RuleCounts())
        status: dict[str, Any] = {"firing": counts.firing}
        if counts.last_fired is not None:
            status["lastFired"] = _rfc3339(counts.last_fired)
        return status


def _some(change: Transition | None) -> list[Transition]:
    return [change] if change is not None else []


def _rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _credentials_secret(entry: PolicyEntry) -> str | None:
    destination = entry.spec.destination
    located = destination.s3 or destination.gcs
    if located is None or located.credentials_secret is None:
        return None
    return located.credentials_secret.name


@dataclass
class KubeEventReceiver:
    """A Kubernetes Event per fired or resolved alert, on the AuditPolicy objects of the
    alert's namespace and on the pod it names, so `kubectl describe` shows it."""

    kube: Any
    policies: PolicyRegistry
    name: str = field(default="kubernetes-events")

    async def send(self, batch: Sequence[Transition]) -> None:
        for transition in batch:
            if transition.change == "updated":
                continue
            try:
                await asyncio.to_thread(self._post, transition)
            except Exception as exc:
                raise ReceiverError(f"Kubernetes Event not created: {exc}") from None

    def _post(self, transition: Transition) -> None:
        alert = transition.alert
        namespace = alert.labels.get("namespace")
        if not namespace:
            return
        targets: list[dict[str, Any]] = [
            {
                "apiVersion": "auditlock.io/v1alpha1",
                "kind": "AuditPolicy",
                "name": p.name,
                "namespace": namespace,
                "uid": p.uid,
            }
            for p in self.policies.in_namespace(namespace)
        ]
        if alert.pod:
            targets.append(
                {"apiVersion": "v1", "kind": "Pod", "name": alert.pod, "namespace": namespace}
            )
        resolved = transition.change == "resolved"
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for target in targets:
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "generateName": f"{target['name'][:200]}.alert-",
                    "namespace": namespace,
                    "labels": {"auditlock.io/alert": alert.fingerprint},
                },
                "involvedObject": target,
                "type": "Normal" if resolved else "Warning",
                "reason": "AlertResolved" if resolved else "AlertFired",
                "message": f"[{alert.severity}] {alert.name}: {alert.summary}"[:1024],
                "source": {"component": "auditlock-alerts"},
                "reportingComponent": "auditlock.io/alerts",
                "reportingInstance": "auditlock-operator",
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            self.kube.core.create_namespaced_event(namespace, body)

    async def close(self) -> None:
        return None
