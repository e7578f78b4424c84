"""Count a policy's pods honestly: selected, carrying its collector, and selected but
running without any collector (whose events nobody records).

Pure functions over `PodView`s (what `Kube.census_pods` lists), so every rule here is
unit-testable; the reconciler turns the result into status fields and the
`AllPodsAudited` condition (docs/operator.md, "Status").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from auditlock.operator import names as n
from auditlock.operator.selection import matches
from auditlock.policy.model import PodSelector

# How many pods without a collector the condition message names; the count says the rest.
NAMED = 5

OPTED_OUT = "opted out"
PREDATES = "created before the policy"
NOT_INJECTED = "admitted without the collector"


@dataclass(frozen=True)
class PodView:
    """What counting needs to know about one pod that runs (not finished, not deleting)."""

    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    created: datetime | None
    collector: bool  # carries a container named auditlock-collector
    shares_processes: bool = False  # shareProcessNamespace: true


@dataclass(frozen=True)
class PodCensus:
    selected: int  # running pods the selector matches
    injected: int  # running pods carrying this policy's collector (selected or not)
    stale: int  # of those, the ones with an older collector configuration
    unaudited: tuple[tuple[str, str], ...]  # (pod, why) selected pods with no collector
    sharing: tuple[str, ...] = ()  # injected pods with shareProcessNamespace: true

    @property
    def fields(self) -> dict[str, int]:
        """The status fields (camelCase, as in AuditPolicyStatus)."""
        return {
            "podsSelected": self.selected,
            "podsInjected": self.injected,
            "podsStale": self.stale,
            "podsUnaudited": len(self.unaudited),
        }


def census(
    pods: list[PodView],
    *,
    policy: str,
    selector: PodSelector,
    config_hash: str,
    policy_created: datetime | None,
    required: bool,
) -> PodCensus:
    selected = injected = stale = 0
    unaudited: list[tuple[str, str]] = []
    sharing: list[str] = []
    for pod in pods:
        owner = pod.labels.get(n.LABEL_POLICY) if pod.collector else None
        if owner == policy:
            injected += 1
            if pod.shares_processes:
                sharing.append(pod.name)
            if pod.annotations.get(n.ANNOTATION_CONFIG_HASH) != config_hash:
                stale += 1
        if not matches(selector, pod.labels):
            continue
        selected += 1
        if owner is None:
            # Another policy's collector (an older policy selecting the same pod) records
            # the pod's events in that policy's trail: the pod is audited.
            unaudited.append((pod.name, _why(pod, policy_created, required)))
    unaudited.sort()
    return PodCensus(selected, injected, stale, tuple(unaudited), tuple(sorted(sharing)))


def _why(pod: PodView, policy_created: datetime | None, required: bool) -> str:
    if not required and pod.annotations.get(n.ANNOTATION_INJECT, "").lower() == "false":
        return OPTED_OUT
    if pod.created is not None and policy_created is not None and pod.created < policy_created:
        return PREDATES
    # The injection webhook failed open (operator down, timeout), was not registered for
    # the namespace, or the pod's labels or the selector changed after admission.
    return NOT_INJECTED


_REASONS = {
    OPTED_OUT: "PodsOptedOut",
    PREDATES: "PodsPredatePolicy",
    NOT_INJECTED: "PodsNotInjected",
}


def audited_condition(result: PodCensus) -> tuple[bool, str, str]:
    """(status, reason, message) of the AllPodsAudited condition."""
    if not result.unaudited:
        return (
            True,
            "AllSelectedPodsAudited",
            f"All {result.selected} selected pod(s) carry a collector.",
        )
    causes = {why for _, why in result.unaudited}
    reason = _REASONS[next(iter(causes))] if len(causes) == 1 else "PodsWithoutCollector"
    shown = ", ".join(f"{pod} ({why})" for pod, why in result.unaudited[:NAMED])
    more = len(result.unaudited) - NAMED
    if more > 0:
        shown += f" and {more} more"
    return (
        False,
        reason,
        f"{len(result.unaudited)} of {result.selected} selected pod(s) run without a "
        f"collector and their events are not recorded: {shown}; re-create them (after "
        f"removing any {n.ANNOTATION_INJECT}=false annotation) to inject it.",
    )
