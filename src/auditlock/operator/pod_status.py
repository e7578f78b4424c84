"""What a policy's status says about the pods it injected: how many, how many run an
older configuration, and whether any shares its process namespace with the collector.

`shareProcessNamespace: true` lets every container of the pod read the collector's key
and spool through /proc. Under `enforcement: required` the webhooks refuse such a pod
(pod_isolation); under `optional` they admit it with a warning, and the policy's
`CollectorIsolated` condition turns False and names the pods, so the exposure is on
record where an auditor looks, not only in the deployer's terminal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from auditlock.operator import conditions as c
from auditlock.operator import names as n
from auditlock.operator.kube import Kube

POD_CONDITIONS = frozenset({c.INJECTING, c.COLLECTOR_ISOLATED})
NAMED_PODS = 5  # pods named in the message; the rest are counted


@dataclass(frozen=True)
class PodCounts:
    injected: int
    stale: int  # carrying an older config hash
    sharing: tuple[str, ...]  # names of pods with shareProcessNamespace: true

    @property
    def fields(self) -> dict[str, Any]:
        return {"podsInjected": self.injected, "podsStale": self.stale}


async def count_pods(kube: Kube, namespace: str, name: str, digest: str) -> PodCounts:
    pods = await asyncio.to_thread(kube.policy_pods, namespace, f"{n.LABEL_POLICY}={name}")
    return PodCounts(
        injected=len(pods),
        stale=sum(1 for p in pods if p.config_hash != digest),
        sharing=tuple(sorted(p.name for p in pods if p.shares_processes)),
    )


def injecting_message(counts: PodCounts | None) -> str:
    if counts is None:
        return "The injection webhook serves this policy's selector."
    return (
        f"{counts.injected} pod(s) carry the collector; {counts.stale} run an older "
        "configuration and pick up the current one when re-created."
    )


def pod_conditions(counts: PodCounts, generation: int) -> list[dict[str, Any]]:
    """The Injecting and CollectorIsolated conditions for these counts."""
    injecting = c.condition(
        c.INJECTING, True, "WebhookServing", injecting_message(counts), generation
    )
    if not counts.sharing:
        isolated = c.condition(
            c.COLLECTOR_ISOLATED,
            True,
            "NoSharedProcessNamespace",
            "No injected pod shares its process namespace with the collector.",
            generation,
        )
    else:
        shown = ", ".join(counts.sharing[:NAMED_PODS])
        more = len(counts.sharing) - NAMED_PODS
        if more > 0:
            shown += f" and {more} more"
        isolated = c.condition(
            c.COLLECTOR_ISOLATED,
            False,
            "SharedProcessNamespace",
            f"{len(counts.sharing)} pod(s) set shareProcessNamespace: true, so their other "
            f"containers can read the collector's signing key and spool: {shown}. Remove it "
            "from the pod spec, or set enforcement: required to refuse such pods.",
            generation,
        )
    return [injecting, isolated]


def unchanged(status: dict[str, Any], counts: PodCounts, generation: int) -> bool:
    """True when status already says what these counts would."""
    if (status.get("podsInjected"), status.get("podsStale")) != (counts.injected, counts.stale):
        return False
    held = {x.get("type"): x for x in status.get("conditions") or [] if isinstance(x, dict)}
    for cond in pod_conditions(counts, generation):
        before = held.get(cond["type"]) or {}
        if (before.get("status"), before.get("message")) != (cond["status"], cond["message"]):
            return False
    return True
