"""kopf handlers for AuditPolicy, registered on a private kopf registry.

A private registry (not kopf's global one) lets tests and benchmarks run several
operators in one process, and keeps importing this module free of side effects.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

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
from auditlock.policy.model import GROUP, PLURAL, VERSION

log = logging.getLogger("auditlock.operator")

MAX_BACKOFF = 300.0
KOPF_PREFIX = f"kopf.{GROUP}"


def backoff(retry: int) -> float:
    """1, 2, 4, ... seconds, at most five minutes."""
    return float(min(MAX_BACKOFF, 2 ** min(retry, 9)))


def build_registry(
    ctx: Context,
    *,
    connection: Any | None = None,
    refresh_seconds: float = 60.0,
    capture: ClusterCapture | None = None,
    watch_fallback: bool = False,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
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

    if connection is not None:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> Any:
            return connection

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry)
    async def converge(body: kopf.Body, retry: int, **_: Any) -> None:
        try:
            await reconcile(ctx, _plain(body))
        except InvalidPolicy as exc:
            raise kopf.PermanentError(str(exc)) from None
        except RetryLater as exc:
            raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None

    pending: dict[tuple[str, str], asyncio.Task[None]] = {}

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_changed(body: kopf.Body, **_: Any) -> None:
        # Any pod of a namespace with policies may change their counts: a selected pod
        # without a collector counts as much as an injected one. Each policy there is
        # recounted at most once a second however many of its pods change at once.
        namespace = str(body.get("metadata", {}).get("namespace"))
        for policy in ctx.registry.in_namespace(namespace):
            key = (namespace, policy.name)
            if key in pending and not pending[key].done():
                continue
            pending[key] = asyncio.create_task(_recount_soon(ctx, key))

    @kopf.on.delete(*resource, registry=registry)
    async def remove(body: kopf.Body, **_: Any) -> None:
        await cleanup(ctx, _plain(body))

    @kopf.timer(*resource, registry=registry, interval=refresh_seconds, initial_delay=1.0)
    async def look(body: kopf.Body, **_: Any) -> None:
        try:
            await refresh(ctx, _plain(body))
        except (InvalidPolicy, RetryLater) as exc:
            log.info("refresh of %s: %s", body.get("metadata", {}).get("name"), exc)

    if capture is not None and watch_fallback:
        for kind, group, plural in WATCHED_RESOURCES:
            _register_watch(registry, capture, kind, group, plural)

    return registry


# The watch fallback's resources (docs/architecture.md, "Sources the operator owns":
# ConfigMaps, Secrets, Roles, RoleBindings).
WATCHED_RESOURCES = (
    ("ConfigMap", "", "configmaps"),
    ("Secret", "", "secrets"),
    ("Role", "rbac.authorization.k8s.io", "roles"),
    ("RoleBinding", "rbac.authorization.k8s.io", "rolebindings"),
)


def _register_watch(
    registry: kopf.OperatorRegistry, capture: ClusterCapture, kind: str, group: str, plural: str
) -> None:
    @kopf.on.event(group, "v1", plural, registry=registry)
    async def changed(event: Any, body: kopf.Body, **_: Any) -> None:
        # The initial listing has type None: only real changes become events. Waits
        # until the collector has the change on disk (kopf holds this object's later
        # events meanwhile).
        await capture.watch_event(kind, str(event.get("type")), _plain(body))


async def _recount_soon(ctx: Context, key: tuple[str, str]) -> None:
    await asyncio.sleep(1.0)
    try:
        await recount(ctx, *key)
    except Exception as exc:
        log.info("recount of %s/%s: %s", *key, exc)


def _plain(body: kopf.Body) -> dict[str, Any]:
    import copy

    return copy.deepcopy(dict(body))
