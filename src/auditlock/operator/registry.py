"""The operator's in-memory view of every valid AuditPolicy, read by the webhooks.

Admission must answer in milliseconds, so the webhooks never call the API server. The
registry has one writer, `PolicyWatch` (policy_watch.py), which follows the AuditPolicy
list in every replica; reconcile and the kopf handlers only read it. Each entry holds
what injection needs, computed once per policy generation (the rendered collector
config and its hash), not once per pod.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from auditlock.operator.selection import matches
from auditlock.policy.model import AuditPolicySpec


@dataclass(frozen=True)
class PolicyEntry:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: AuditPolicySpec
    config_hash: str
    created: str  # creationTimestamp: older policies win when several select one pod
    config_text: str = ""  # the rendered collector config file, whose hash is config_hash

    @property
    def required(self) -> bool:
        return self.spec.enforcement == "required"


class PolicyRegistry:
    """Thread-safe map namespace -> policies; readers get immutable snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_namespace: dict[str, dict[str, PolicyEntry]] = {}
        # Per namespace, the policies oldest first: built on write, so a webhook request
        # reads one tuple and never sorts.
        self._ordered: dict[str, tuple[PolicyEntry, ...]] = {}
        self._synced = threading.Event()

    def put(self, entry: PolicyEntry) -> None:
        """Add or update; an entry older than the one held (same object, lower
        generation) is ignored, so a late event never rolls a policy back."""
        with self._lock:
            policies = dict(self._by_namespace.get(entry.namespace, {}))
            held = policies.get(entry.name)
            if held is not None and held.uid == entry.uid and held.generation > entry.generation:
                return
            policies[entry.name] = entry
            self._by_namespace[entry.namespace] = policies
            self._ordered[entry.namespace] = tuple(sorted(policies.values(), key=_order))

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            policies = dict(self._by_namespace.get(namespace, {}))
            policies.pop(name, None)
            if policies:
                self._by_namespace[namespace] = policies
                self._ordered[namespace] = tuple(sorted(policies.values(), key=_order))
            else:
                self._by_namespace.pop(namespace, None)
                self._ordered.pop(namespace, None)

    def replace(self, entries: list[PolicyEntry], *, keep: set[tuple[str, str]]) -> None:
        """Replace everything with a fresh list; `keep` names objects whose current spec
        is invalid, whose last valid entry (if any) stays."""
        with self._lock:
            fresh: dict[str, dict[str, PolicyEntry]] = {}
            for namespace, policies in self._by_namespace.items():
                for name, entry in policies.items():
                    if (namespace, name) in keep:
                        fresh.setdefault(namespace, {})[name] = entry
            for entry in entries:
                fresh.setdefault(entry.namespace, {})[entry.name] = entry
            self._by_namespace = fresh
            self._ordered = {ns: tuple(sorted(ps.values(), key=_order)) for ns, ps in fresh.items()}

    def get(self, namespace: str, name: str) -> PolicyEntry | None:
        return self._by_namespace.get(namespace, {}).get(name)

    def holds(self, namespace: str, name: str, uid: str, generation: int) -> bool:
        """True when the entry for this object is at `generation` or newer."""
        held = self.get(namespace, name)
        return held is not None and held.uid == uid and held.generation >= generation

    def holds_none(self, namespace: str, name: str, uid: str) -> bool:
        """True when no entry for this object (this uid) is held."""
        held = self.get(namespace, name)
        return held is None or held.uid != uid

    def in_namespace(self, namespace: str) -> tuple[PolicyEntry, ...]:
        return self._ordered.get(namespace, ())

    def selecting(self, namespace: str, labels: Mapping[str, str]) -> list[PolicyEntry]:
        """Policies selecting a pod, oldest first (the first one injects)."""
        return [p for p in self.in_namespace(namespace) if matches(p.spec.selector, labels)]

    def namespaces(self) -> set[str]:
        return set(self._by_namespace)

    def any_required(self) -> bool:
        return any(p.required for ps in self._by_namespace.values() for p in ps.values())

    def mark_synced(self) -> None:
        self._synced.set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        """True once the initial list of policies has been loaded (readiness)."""
        return self._synced.is_set()


def _order(entry: PolicyEntry) -> tuple[str, str]:
    return (entry.created, entry.name)
