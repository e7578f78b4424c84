"""Keep the webhooks' policy registry current in every replica.

kopf's handlers run only in the replica that holds the peering lead, but every replica
answers admission requests, so each one follows the AuditPolicy list itself: a list,
then a watch from its resourceVersion, and a fresh list after any error (410 Gone, a
dropped connection) with backoff. The blocking client runs in a daemon thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from kubernetes import watch
from pydantic import ValidationError

from auditlock.operator.kube import Kube
from auditlock.operator.reconcile import entry_for
from auditlock.operator.registry import PolicyRegistry
from auditlock.operator.trail_gauges import TrailVerdicts
from auditlock.policy.model import GROUP, PLURAL, VERSION

log = logging.getLogger("auditlock.operator.policy_watch")

WATCH_TIMEOUT = 60  # seconds per watch call; also bounds how long stop() takes


class PolicyWatch:
    def __init__(
        self,
        kube: Kube,
        registry: PolicyRegistry,
        *,
        cluster: str = "",
        namespaces: list[str] | None = None,
        verdicts: TrailVerdicts | None = None,
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.verdicts = verdicts
        self.cluster = cluster
        self.namespaces = set(namespaces or [])
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(
            target=self._run, name="auditlock-policy-watch", daemon=True
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start following; returns once the first list is in the registry."""
        self._thread.start()
        if not self.registry.wait_synced(timeout):
            raise TimeoutError(f"AuditPolicies not listed within {timeout} s")

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _wanted(self, obj: dict[str, Any]) -> bool:
        namespace = (obj.get("metadata") or {}).get("namespace")
        return not self.namespaces or namespace in self.namespaces

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            self.registry.remove(namespace, name)
            if self.verdicts is not None:
                self.verdicts.forget(namespace, name)
            return
        if self.verdicts is not None:
            self.verdicts.observe(namespace, name, obj.get("status"))
        # An invalid edit keeps the last valid version in force: auditing is not
        # switched off by a bad edit.
        with contextlib.suppress(ValidationError, KeyError):
            self.registry.put(entry_for(obj, self.cluster))

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                answer = self.kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                entries = []
                invalid = set()
                for obj in answer.get("items", []):
                    if not self._wanted(obj):
                        continue
                    meta = obj.get("metadata") or {}
                    try:
                        entries.append(entry_for(obj, self.cluster))
                    except (ValidationError, KeyError):
                        invalid.add((meta.get("namespace", ""), meta.get("name", "")))
                self.registry.replace(entries, keep=invalid)
                if self.verdicts is not None:
                    self.verdicts.replace([o for o in answer.get("items", []) if self._wanted(o)])
                self.registry.mark_synced()
                version = answer["metadata"]["resourceVersion"]
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in self._watch.stream(
                    self.kube.custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=WATCH_TIMEOUT,
                ):
                    if self._stop.is_set():
                        return
                    obj = event.get("object")
                    if event.get("type") == "ERROR" or not isinstance(obj, dict):
                        break  # e.g. 410 Gone: list again
                    if self._wanted(obj):
                        self._apply(str(event.get("type")), obj)
                delay = 0.5
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("AuditPolicy watch failed (%s); listing again in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
