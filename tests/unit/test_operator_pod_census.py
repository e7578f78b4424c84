"""Counting a policy's pods: selected, injected, stale, and selected without a collector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from auditlock.operator import names as n
from auditlock.operator.pod_census import (
    NAMED,
    NOT_INJECTED,
    OPTED_OUT,
    PREDATES,
    PodView,
    audited_condition,
    census,
)
from auditlock.policy.model import PodSelector

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
SELECTOR = PodSelector(match_labels={"app": "pay"})


def pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    before: bool = False,
    collector: bool = False,
) -> PodView:
    return PodView(
        name=name,
        labels={"app": "pay", **(labels or {})},
        annotations=annotations or {},
        created=CREATED + timedelta(hours=-1 if before else 1),
        collector=collector,
    )


def count(pods: list[PodView], required: bool = False) -> tuple[int, int, int, list[str]]:
    result = census(
        pods,
        policy="p",
        selector=SELECTOR,
        config_hash="h1",
        policy_created=CREATED,
        required=required,
    )
    return result.selected, result.injected, result.stale, [w for _, w in result.unaudited]


def test_each_kind_of_pod_is_counted_once() -> None:
    ours = {n.LABEL_POLICY: "p"}
    pods = [
        pod("injected", labels=ours, annotations={n.ANNOTATION_CONFIG_HASH: "h1"}, collector=True),
        pod("stale", labels=ours, annotations={n.ANNOTATION_CONFIG_HASH: "h0"}, collector=True),
        pod("older-policy", labels={n.LABEL_POLICY: "q"}, collector=True),
        pod("opted", annotations={n.ANNOTATION_INJECT: "False"}),
        pod("before", before=True),
        pod("missed"),
        # Labelled but without the container (edited after admission): not audited.
        pod("label-only", labels=ours),
        PodView("other-app", {"app": "web"}, {}, CREATED, False),
    ]
    selected, injected, stale, why = count(pods)
    assert (selected, injected, stale) == (7, 2, 1)
    assert why == [PREDATES, NOT_INJECTED, NOT_INJECTED, OPTED_OUT]


def test_opt_out_does_not_explain_a_missing_collector_under_required() -> None:
    assert count([pod("opted", annotations={n.ANNOTATION_INJECT: "false"})], True)[3] == [
        NOT_INJECTED
    ]


def test_injected_pod_outside_the_selector_still_counts_as_injected() -> None:
    moved = PodView("moved", {n.LABEL_POLICY: "p"}, {n.ANNOTATION_CONFIG_HASH: "h1"}, None, True)
    assert count([moved]) == (0, 1, 0, [])


def test_condition_names_a_few_pods_and_the_cause() -> None:
    everyone = census(
        [pod(f"p{i}", before=True) for i in range(NAMED + 3)],
        policy="p",
        selector=SELECTOR,
        config_hash="h",
        policy_created=CREATED,
        required=False,
    )
    ok, reason, message = audited_condition(everyone)
    assert (ok, reason) == (False, "PodsPredatePolicy")
    assert message.startswith(f"{NAMED + 3} of {NAMED + 3} selected pod(s) run without")
    assert "p0 (created before the policy)" in message and "and 3 more" in message
    assert f"p{NAMED}" not in message
    mixed = census(
        [pod("a", before=True), pod("b")],
        policy="p",
        selector=SELECTOR,
        config_hash="h",
        policy_created=CREATED,
        required=False,
    )
    assert audited_condition(mixed)[1] == "PodsWithoutCollector"
    none = census([], policy="p", selector=SELECTOR, config_hash="h", policy_created=None,
                  required=False)  # fmt: skip
    assert audited_condition(none)[:2] == (True, "AllSelectedPodsAudited")
