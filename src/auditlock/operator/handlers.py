"""kopf handlers for AuditPolicy and the resources the operator watches.

The handlers are module-level functions; what they share (the reconcile context, the
cluster capture, kopf's login) reaches them through kopf's `memo`, which the runner
passes to `kopf.operator`. `handler_registry` registers them on a private kopf registry
rather than kopf's global one, so that tests and benchmarks can run several operators in
one process and importing this module has no side effects.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from auditlock.operator import alert_rules
from auditlock.operator.alerting import OperatorAlerts
from auditlock.operator.capture import ClusterCapture
from auditlock.operator.reconcile import (
    Context,
    InvalidPolicy,
    RetryLater,
    cleanup,
    reconcile,
    recount,
    refresh,
)
from auditlock.operator.webhook_server import WebhookServer
from auditlock.policy.model import GROUP, PLURAL, VERSION

log = logging.getLogger("auditlock.operator")

MAX_BACKOFF = 300.0
KOPF_PREFIX = f"kopf.{GROUP}"
POLICIES = (GROUP, VERSION, PLURAL)
RECOUNT_DELAY = 1.0  # seconds: a policy is recounted at most this often

# The watch fallback's resources (docs/architecture.md, "Sources the operator owns":
# ConfigMaps, Secrets, Roles, RoleBindings): (kind, group, plural).
WATCHED_RESOURCES = (
    ("ConfigMap", "", "configmaps"),
    ("Secret", "", "secrets"),
    ("Role", "rbac.authorization.k8s.io", "roles"),
    ("RoleBinding", "rbac.authorization.k8s.io", "rolebindings"),
)
WATCHED_KINDS = {plural: kind for kind, _, plural in WATCHED_RESOURCES}


@dataclass
class HandlerMemo:
    """What every handler shares, passed as `kopf.operator(memo=...)`.

    kopf gives each object a shallow copy of this memo, so the fields are shared by all
    objects' handlers: `recounts` is one map for the whole operator.
    """

    ctx: Context
    capture: ClusterCapture | None = None
    connection: Any | None = None  # kopf.ConnectionInfo; None: kopf's own login
    alerts: OperatorAlerts | None = None
    # Closed by `stop_serving` when kopf cleans up (see there).
    webhook_server: WebhookServer | None = None
    recounts: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)


def backoff(retry: int) -> float:
    """1, 2, 4, ... seconds, at most five minutes."""
    return float(min(MAX_BACKOFF, 2 ** min(retry, 9)))


async def stop_serving(memo: HandlerMemo, **_: Any) -> None:
    """Close the webhook server when the operator stops, before kopf reaps what is left.

    Its open connections are the API server's idle keep-alive ones (admission and audit
    webhooks). Left open, their handler tasks are "hung" to kopf, which waits 5 s for them
    before cancelling: every stop, SIGTERM included, would take 5 s longer. The runner
    closes the server again after kopf returns; closing twice is harmless."""
    if memo.webhook_server is not None:
        await memo.webhook_server.stop()


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base in annotations: the CRD's status schema is ours alone.
    # kopf leaves annotations under its own prefix out of the diff, so it gets one
    # that our user-facing annotations (auditlock.io/rotate-key) do not share.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


def login(memo: HandlerMemo, **_: Any) -> Any:
    return memo.connection


async def converge(body: kopf.Body, retry: int, memo: HandlerMemo, **_: Any) -> None:
    try:
        await reconcile(memo.ctx, _plain(body))
    except InvalidPolicy as exc:
        raise kopf.PermanentError(str(exc)) from None
    except RetryLater as exc:
        raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None


async def remove(body: kopf.Body, memo: HandlerMemo, **_: Any) -> None:
    await cleanup(memo.ctx, _plain(body))


async def look(body: kopf.Body, memo: HandlerMemo, **_: Any) -> None:
    try:
        await refresh(memo.ctx, _plain(body))
    except (InvalidPolicy, RetryLater) as exc:
        log.info("refresh of %s: %s", body.get("metadata", {}).get("name"), exc)


async def pod_changed(body: kopf.Body, memo: HandlerMemo, **_: Any) -> None:
    # Any pod of a namespace with policies may change their counts: a selected pod
    # without a collector counts as much as an injected one. Each policy there is
    # recounted at most once a second however many of its pods change at once.
    namespace = str(body.get("metadata", {}).get("namespace"))
    pending = memo.recounts
    for policy in memo.ctx.registry.in_namespace(namespace):
        key = (namespace, policy.name)
        if key in pending and not pending[key].done():
            continue
        pending[key] = asyncio.create_task(_recount_soon(memo.ctx, key))


async def watched_changed(
    event: Any, body: kopf.Body, resource: kopf.Resource, memo: HandlerMemo, **_: Any
) -> None:
    # The initial listing has type None: only real changes become events. Waits until
    # the collector has the change on disk (kopf holds this object's later events
    # meanwhile).
    if memo.capture is None:
        return
    kind = WATCHED_KINDS[resource.plural]
    await memo.capture.watch_event(kind, str(event.get("type")), _plain(body))


def handler_registry(
    *,
    login_handler: bool = False,
    refresh_seconds: float = 60.0,
    watch_fallback: bool = False,
    alert_rules_enabled: bool = False,
) -> kopf.OperatorRegistry:
    """A kopf registry with the handlers; `login_handler` when the memo carries the
    connection, `watch_fallback` to record ConfigMap/Secret/Role/RoleBinding changes,
    `alert_rules_enabled` to evaluate AuditAlertRules (operator/alert_rules.py)."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(configure)
    kopf.on.cleanup(registry=registry)(stop_serving)
    if login_handler:
        kopf.on.login(registry=registry)(login)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*POLICIES, registry=registry)(converge)
    kopf.on.delete(*POLICIES, registry=registry)(remove)
    kopf.timer(*POLICIES, registry=registry, interval=refresh_seconds, initial_delay=1.0)(look)
    kopf.on.event("", "v1", "pods", registry=registry)(pod_changed)
    if alert_rules_enabled:
        alert_rules.register(registry, status_seconds=refresh_seconds)
    if watch_fallback:
        for _, group, plural in WATCHED_RESOURCES:
            kopf.on.event(group, "v1", plural, registry=registry)(watched_changed)
    return registry


async def _recount_soon(ctx: Context, key: tuple[str, str]) -> None:
    await asyncio.sleep(RECOUNT_DELAY)
    try:
        await recount(ctx, *key)
    except Exception as exc:
        log.info("recount of %s/%s: %s", *key, exc)


def _plain(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))
