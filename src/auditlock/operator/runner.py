"""Run the operator: kopf handlers, the webhook server, cluster-level capture, together
in one event loop. `run()` is what `auditlock operator run` calls; `OperatorThread` runs
the same thing in a background thread for tests and benchmarks."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter

from auditlock.ledger.keys import Signer, load_private_key
from auditlock.ledger.value_hash import key_id
from auditlock.operator import keys
from auditlock.operator.abandonment import DEFAULT_GRACE_SECONDS, AbandonWatch
from auditlock.operator.alerting import AlertSettings, OperatorAlerts
from auditlock.operator.capture import DEFAULT_COLLECTOR, RETRY_AFTER_SECONDS, ClusterCapture
from auditlock.operator.certificates import CertificateIssuer
from auditlock.operator.handlers import HandlerMemo, handler_registry
from auditlock.operator.injection import InjectionSettings
from auditlock.operator.kube import Kube, ServerVersion
from auditlock.operator.names import LABEL_MANAGED_BY, MANAGED_BY
from auditlock.operator.policy_watch import PolicyWatch
from auditlock.operator.reconcile import Context, close_abandoned_in
from auditlock.operator.registry import PolicyRegistry
from auditlock.operator.secret_hashes import load_or_create_key
from auditlock.operator.status_metrics import PolicyStatusMetrics
from auditlock.operator.stream_ids import check_cluster_name, derived_cluster_name, stream_id
from auditlock.operator.trail_gauges import TrailVerdicts
from auditlock.operator.webhook_server import Listener, WebhookServer
from auditlock.operator.witness import Witness, WitnessMetrics, WitnessSettings

log = logging.getLogger("auditlock.operator")

DEFAULT_SIDECAR_IMAGE = "ghcr.io/auditlock/auditlock-sidecar:0.1.0"


@dataclass
class OperatorConfig:
    api_client: Any  # kubernetes.client.ApiClient
    webhook_listeners: list[Listener]
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    sidecar_mode: Literal["auto", "native", "classic"] = "auto"
    sidecar_pull_policy: str = "IfNotPresent"
    # Part of every stream id and event source; empty: derived from the kube-system
    # namespace's UID at start.
    cluster: str = ""
    # (namespace, name) of a ConfigMap in which the cluster name is published for the
    # collector beside the operator (the chart's <fullname>-cluster); None: not published.
    identity_config_map: tuple[str, str] | None = None
    # (namespace, name) of the Secret holding the key Secret values are hashed under
    # (created when absent; secret_hashes.py); None: Secret writes are kept unhashed.
    secret_hash_key: tuple[str, str] | None = None
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace
    standalone: bool = True
    peering_name: str | None = None
    priority: int = 0  # kopf peering: the live replica with the highest priority leads
    kopf_connection: Any | None = None  # kopf.ConnectionInfo; None: kopf's own login
    refresh_seconds: float = 60.0
    checkpoint_scan_seconds: float = 300.0
    audit_token: str | None = None
    collector: str = DEFAULT_COLLECTOR  # HOST:PORT of the collector's HTTP intake
    # Retry-After (seconds) of an audit batch the collector did not store (capture.py).
    audit_retry_after_seconds: int = RETRY_AFTER_SECONDS
    capture_enabled: bool = True
    watch_fallback: bool = False  # watch ConfigMaps/Secrets/Roles/RoleBindings (needs RBAC)
    # Close the streams of pods gone for good after this long (None: never).
    abandon_grace_seconds: float | None = DEFAULT_GRACE_SECONDS
    # Alert rules on API events, the trail watcher and delivery (operator/alerting.py).
    alerts: AlertSettings = field(default_factory=AlertSettings)
    # Certifies collectors' per-pod keys on /v1/certificates (operator/certificates.py);
    # None: the endpoint is not served.
    root_key: Signer | None = field(default=None, repr=False)
    certificate_validity_seconds: float = 24 * 3600
    # What injected collectors of `signing: perPod` policies are told: the endpoint's
    # URL (the webhook Service) and the CA of its TLS certificate (PEM).
    certificate_url: str = ""
    certificate_ca: str = ""
    # The witness of every stream (operator/witness.py): (namespace, name) of the Secret
    # holding the operator's Ed25519 key (`ed25519.pem`; the chart's is the key the
    # collector beside the operator signs the cluster stream with); None: no witness.
    witness_key_secret: tuple[str, str] | None = None
    witness: WitnessSettings = field(default_factory=WitnessSettings)


def post_event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """Queue a Kubernetes Event on the policy (kopf posts it in the background)."""
    target: Any = body  # kopf reads apiVersion, kind and metadata from a plain dict too
    kopf.event(target, type=kind, reason=reason, message=message[:1024])


def event_poster(kube: Kube) -> Callable[[dict[str, Any], str, str, str], None]:
    """`post_event` in kopf's handlers; elsewhere (the witness's cycle), where kopf has no
    poster, the Event is created through the API in a worker thread."""

    def post(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        try:
            post_event(body, kind, reason, message)
            return
        except LookupError:
            pass

        def create() -> None:
            try:
                kube.post_event(body, kind, reason, message)
            except Exception as exc:  # an Event is a notice; the log line stands
                log.warning("Event %s on %s not posted: %s", reason,
                            body.get("metadata", {}).get("name"), exc)  # fmt: skip

        asyncio.get_running_loop().run_in_executor(None, create)

    return post


def sidecar_style(mode: str, version: ServerVersion) -> bool:
    """True for native sidecars."""
    if mode == "native":
        return True
    if mode == "classic":
        return False
    return version.native_sidecars


class Operator:
    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.kube = Kube(config.api_client)
        self.policies = PolicyRegistry()
        self.server: WebhookServer | None = None
        self.capture: ClusterCapture | None = None
        self.alerts: OperatorAlerts | None = None
        self.witness: Witness | None = None
        self.version: ServerVersion | None = None

    async def run(
        self,
        stop_flag: asyncio.Event | threading.Event | None = None,
        ready_flag: threading.Event | None = None,
    ) -> None:
        config = self.config
        if config.cluster:
            check_cluster_name(config.cluster)
        else:
            # Never empty: the cluster is part of every stream id (stream_ids.py).
            uid = await asyncio.to_thread(self.kube.namespace_uid, "kube-system")
            config.cluster = derived_cluster_name(uid)
        if config.identity_config_map is not None:
            namespace, name = config.identity_config_map
            labels = {"app.kubernetes.io/part-of": "auditlock", LABEL_MANAGED_BY: MANAGED_BY}
            await asyncio.to_thread(
                self.kube.apply_config_map,
                namespace,
                name,
                {"clusterName": config.cluster},
                {"labels": labels},
            )
        log.info("cluster name %s: stream ids are %s_<namespace>_<pod>", config.cluster,
                 config.cluster)  # fmt: skip
        secret_key = None
        if config.secret_hash_key is not None:
            secret_key = await asyncio.to_thread(
                load_or_create_key, self.kube, *config.secret_hash_key
            )
            log.info("Secret values are recorded as HMAC-SHA256 under key id %s (Secret %s/%s)",
                     key_id(secret_key), *config.secret_hash_key)  # fmt: skip
        else:
            log.warning("no Secret hash key (--secret-hash-key): Secret writes are recorded "
                        "without hashes of their values")  # fmt: skip
        self.version = await asyncio.to_thread(self.kube.server_version)
        native = sidecar_style(config.sidecar_mode, self.version)
        log.info(
            "API server %s: injecting %s sidecars",
            self.version.git_version,
            "native" if native else "classic",
        )
        self.metrics = CollectorRegistry()
        outcomes = Counter(
            "auditlock_operator_reconciles",
            "Policy reconciles and refreshes, by the Ready reason they ended with.",
            ["reason"],
            registry=self.metrics,
        )
        abandoned = Counter(
            "auditlock_operator_streams_abandoned",
            "Attempts to close the stream of a pod gone for good, by outcome.",
            ["outcome"],
            registry=self.metrics,
        )
        # Three refresh periods: a replica that stood down stops exporting soon after.
        status_metrics = PolicyStatusMetrics(ttl_seconds=3 * config.refresh_seconds)
        self.metrics.register(status_metrics)
        grace = config.abandon_grace_seconds
        ctx = Context(
            self.kube,
            self.policies,
            config.cluster,
            events=event_poster(self.kube),
            outcomes=lambda reason: outcomes.labels(reason).inc(),
            checkpoint_scan_seconds=config.checkpoint_scan_seconds,
            abandon=AbandonWatch(grace_seconds=grace) if grace else None,
            abandon_outcomes=lambda outcome: abandoned.labels(outcome).inc(),
            status_metrics=status_metrics,
            root_key=(
                keys.material_of(config.root_key.private) if config.root_key is not None else None
            ),
        )
        self.verdicts = TrailVerdicts()
        self.metrics.register(self.verdicts)
        self.policy_watch = PolicyWatch(
            self.kube,
            self.policies,
            cluster=config.cluster,
            namespaces=config.namespaces,
            verdicts=self.verdicts,
        )
        await asyncio.to_thread(self.policy_watch.start)
        if config.capture_enabled:
            self.capture = ClusterCapture(
                self.policies,
                self.kube,
                cluster=config.cluster,
                collector=config.collector,
                metrics=self.metrics,
                secret_key=secret_key,
                retry_after_seconds=config.audit_retry_after_seconds,
            )
        if config.alerts.enabled:
            self.alerts = self._alerting(config)
        # Registered even without a witness (or when its key cannot be loaded): the
        # dashboard and AuditlockWitnessFailing query these series by name, and a
        # scrape that shows zero cycles says "no witness" more plainly than no series.
        self.witness_metrics = WitnessMetrics(self.metrics)
        if config.witness_key_secret is not None:
            self.witness = await self._witness(config, config.witness_key_secret, ctx)
        if self.witness is not None and ctx.abandon is not None:
            # The witness closes abandoned streams in its cycles (reconcile.close_abandoned_in).
            ctx = dataclasses.replace(ctx, abandon_in_refresh=False)
        self.server = WebhookServer(
            registry=self.policies,
            injection=InjectionSettings(
                image=config.sidecar_image,
                native_sidecar=native,
                cluster=config.cluster,
                image_pull_policy=config.sidecar_pull_policy,
                certificate_url=config.certificate_url,
                certificate_ca=config.certificate_ca,
            ),
            listeners=config.webhook_listeners,
            audit_sink=self.capture.audit_sink if self.capture else None,
            audit_token=config.audit_token,
            metrics=self.metrics,
            certificates=self._issuer(config),
        )
        await self.server.start()
        handlers = handler_registry(
            login_handler=config.kopf_connection is not None,
            refresh_seconds=config.refresh_seconds,
            watch_fallback=config.watch_fallback and self.capture is not None,
            alert_rules_enabled=self.alerts is not None,
        )
        memo = HandlerMemo(
            ctx,
            capture=self.capture,
            connection=config.kopf_connection,
            alerts=self.alerts,
            webhook_server=self.server,
        )
        try:
            await kopf.operator(
                registry=handlers,
                memo=memo,
                standalone=config.standalone,
                peering_name=config.peering_name,
                priority=config.priority,
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            self.policy_watch.stop()
            await self.server.stop()
            if self.alerts is not None:
                await self.alerts.close()
            if self.witness is not None:
                await self.witness.close()
            if self.capture is not None:
                await self.capture.close()

    def _issuer(self, config: OperatorConfig) -> CertificateIssuer | None:
        if config.root_key is None:
            return None
        log.info("certifying per-pod keys under root key %s", config.root_key.key_id)
        return CertificateIssuer(
            root=config.root_key,
            kube=self.kube,
            registry=self.policies,
            cluster=config.cluster,
            validity_seconds=config.certificate_validity_seconds,
        )

    async def _witness(
        self, config: OperatorConfig, secret: tuple[str, str], ctx: Context
    ) -> Witness | None:
        namespace, name = secret
        try:
            data = await asyncio.to_thread(self.kube.read_secret, namespace, name)
            material = keys.from_secret_data(data, f"{namespace}/{name}")
        except (ApiException, keys.KeySecretError) as exc:
            # The operator still admits and captures; the trail watcher's alerts and
            # `verify --witness-key` (witness-stale, witness-missing) show the gap.
            log.error("no witness: cannot load its key from Secret %s/%s: %s", namespace, name,
                      exc)  # fmt: skip
            return None
        signer = Signer(load_private_key(material.private_pem))
        witness = Witness(
            config.witness,
            self.policies,
            config.cluster,
            signer,
            self.witness_metrics,
            read_secret=self.kube.read_secret,
            store_events=self.capture.store_witness_events if self.capture else None,
            close_abandoned=functools.partial(close_abandoned_in, ctx),
        )
        witness.start()
        log.info("witness every %.0f s as %s with key %s (Secret %s/%s)%s",
                 config.witness.interval_seconds, config.cluster, material.key_id, namespace,
                 name, f", timestamped by {config.witness.tsa_url}" if config.witness.tsa_url
                 else "")  # fmt: skip
        return witness

    def _alerting(self, config: OperatorConfig) -> OperatorAlerts:
        kube = self.kube
        pod, namespace = os.environ.get("POD_ID"), os.environ.get("POD_NAMESPACE")
        if config.alerts.own_stream == "operator" and pod and namespace:
            # The collector beside the operator writes this stream (the chart's
            # AUDITLOCK_SIDECAR__STREAM__ID): API events' alerts name it as evidence.
            config.alerts.own_stream = stream_id(config.cluster, namespace, pod)

        def read_status(namespace: str, name: str) -> dict[str, Any] | None:
            body = kube.get_policy(namespace, name)
            return None if body is None else body.get("status")

        alerts = OperatorAlerts(
            config.alerts,
            self.policies,
            cluster=config.cluster,
            metrics=self.metrics,
            store=self.capture.store_alert_events if self.capture is not None else None,
            kube=kube,
            read_secret=kube.read_secret,
            read_status=read_status,
        )
        if self.capture is not None:
            self.capture.observers.append(alerts.observe)
        alerts.start()
        return alerts


class OperatorThread:
    """The operator in a daemon thread with its own event loop (tests, benchmarks)."""

    def __init__(self, config: OperatorConfig) -> None:
        self.operator = Operator(config)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="auditlock-operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(self.operator.run(stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def start(self, timeout: float = 30.0) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"operator not ready within {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"operator failed to start: {self.error!r}") from self.error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def policies(self) -> PolicyRegistry:
        return self.operator.policies

    @property
    def webhook_ports(self) -> list[int]:
        assert self.operator.server is not None
        return self.operator.server.bound_ports
