"""What a policy's status says about its pods: how many it selects, how many carry its
collector and how many of those run an older configuration, which selected pods run
without any collector (AllPodsAudited, counted by pod_census), and whether an injected pod
shares its process namespace with the collector.

`shareProcessNamespace: true` (or `hostPID: true`) lets every container of the pod read
the collector's key and spool through /proc. Under `enforcement: required` the webhooks
refuse such a pod (pod_isolation); under `optional` they admit it with a warning, and the
policy's `CollectorIsolated` condition turns False and names the pods, so the exposure
is on record where an auditor looks, not only in the deployer's terminal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from auditlock.operator import conditions as c
from auditlock.operator.kube import Kube
from auditlock.operator.pod_census import NAMED, PodCensus, audited_condition, census
from auditlock.operator.registry import PolicyEntry
from auditlock.operator.selection import to_label_selector_string

POD_CONDITIONS = frozenset({c.INJECTING, c.COLLECTOR_ISOLATED, c.ALL_PODS_AUDITED})
NAMED_PODS = NAMED  # pods named in a message; the rest are counted


async def count_pods(kube: Kube, entry: PolicyEntry, digest: str) -> PodCensus:
    """Count `entry`'s pods against the collector configuration `digest`."""
    selector = to_label_selector_string(entry.spec.selector)
    pods = await asyncio.to_thread(kube.census_pods, entry.namespace, selector, entry.name)
    return census(
        pods,
        policy=entry.name,
        selector=entry.spec.selector,
        config_hash=digest,
        policy_created=_parse_time(entry.created),
        required=entry.required,
    )


def _parse_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def injecting_condition(
    generation: int,
    counts: PodCensus | None = None,
    *,
    invalid: str | None = None,
    serving: int | None = None,
) -> dict[str, Any]:
    """The Injecting condition. `counts`: the pods, when counted; `invalid`: why the
    current spec is invalid, with `serving` the last valid generation the webhooks
    keep injecting (None: there is none, nothing is injected)."""
    if invalid is not None:
        if serving is None:
            return c.condition(c.INJECTING, False, "InvalidSpec", invalid, generation)
        message = f"Pods are injected with generation {serving}, the last valid spec."
        return c.condition(c.INJECTING, True, "LastValidSpec", message, generation)
    if counts is None:
        message = "The injection webhook serves this policy's selector."
    else:
        message = (
            f"{counts.injected} pod(s) carry the collector; {counts.stale} run an older "
            "configuration and pick up the current one when re-created."
        )
    return c.condition(c.INJECTING, True, "WebhookServing", message, generation)


def pod_conditions(counts: PodCensus, generation: int) -> list[dict[str, Any]]:
    """The Injecting, CollectorIsolated and AllPodsAudited conditions for these counts."""
    injecting = injecting_condition(generation, counts)
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
            f"{len(counts.sharing)} pod(s) set shareProcessNamespace: true or hostPID: true, "
            f"so their other containers can read the collector's signing key and spool: "
            f"{shown}. Remove it from the pod spec, or set enforcement: required to refuse "
            "such pods.",
            generation,
        )
    ok, reason, message = audited_condition(counts)
    audited = c.condition(c.ALL_PODS_AUDITED, ok, reason, message, generation)
    return [injecting, isolated, audited]


def unchanged(status: dict[str, Any], counts: PodCensus, generation: int) -> bool:
    """True when status already says what these counts would."""
    if any(status.get(k) != v for k, v in counts.fields.items()):
        return False
    held = {x.get("type"): x for x in status.get("conditions") or [] if isinstance(x, dict)}
    for cond in pod_conditions(counts, generation):
        before = held.get(cond["type"]) or {}
        if (before.get("status"), before.get("message")) != (cond["status"], cond["message"]):
            return False
    return True
