"""The chart's example audit policy for the API server (scripts/kind/audit-policy.yaml)
sends exactly what the operator keeps, and the test rig's policy has the same rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from auditlock.operator.audit_events import (
    CONFIGURATION,
    LONG_RUNNING,
    RBAC,
    RBAC_GROUP,
    WRITE_VERBS,
    from_audit_event,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "scripts" / "kind" / "audit-policy.yaml"
RIG = ROOT / "tests" / "servers" / "kube_audit_policy.yaml"
ALL_VERBS = ("get", "list", "watch", *sorted(WRITE_VERBS))


def _rules(path: Path) -> list[dict[str, Any]]:
    policy = yaml.safe_load(path.read_text())
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"
    rules: list[dict[str, Any]] = policy["rules"]
    return rules


def level(rules: list[dict[str, Any]], group: str, resource: str, verb: str, user: str) -> str:
    """The level the API server gives a request (first matching rule), for the rule
    fields the policies use."""
    for rule in rules:
        if "users" in rule and user not in rule["users"]:
            continue
        if "userGroups" in rule or "nonResourceURLs" in rule:
            continue  # these requests come from ordinary users to resource URLs
        if "verbs" in rule and verb not in rule["verbs"]:
            continue
        if "resources" in rule and not any(
            g.get("group") == group and resource in g.get("resources", [resource])
            for g in rule["resources"]
        ):
            continue
        return str(rule["level"])
    return "None"


def _event(group: str, resource: str, verb: str) -> dict[str, Any]:
    name, _, sub = resource.partition("/")
    ref = {"apiGroup": group, "resource": name, "namespace": "shop", "name": "x"}
    if sub:
        ref["subresource"] = sub
    return {
        "auditID": "a", "stage": "ResponseComplete", "verb": verb, "objectRef": ref,
        "user": {"username": "alice"}, "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-11-29T15:08:52Z",
    }  # fmt: skip


def _kinds() -> set[tuple[str, str]]:
    kept = {("", f"pods/{s}") for s in LONG_RUNNING} | {("", "secrets")}
    kept |= {(RBAC_GROUP, r) for r in RBAC} | set(CONFIGURATION)
    kept |= {("", "serviceaccounts/token"), ("apps", "deployments/scale")}
    kept |= {("", "pods"), ("", "events"), ("coordination.k8s.io", "leases")}
    kept |= {("apps", "replicasets"), ("", "serviceaccounts"), ("", "endpoints")}
    return kept


def test_the_example_sends_exactly_what_the_operator_keeps() -> None:
    rules = _rules(EXAMPLE)
    for group, resource in sorted(_kinds()):
        for verb in ALL_VERBS:
            sent = level(rules, group, resource, verb, "alice") != "None"
            kept = from_audit_event(_event(group, resource, verb), {"shop"}) is not None
            assert sent == kept, (group, resource, verb, "sent" if sent else "not sent")
    # Never the values of Secrets.
    assert level(rules, "", "secrets", "create", "alice") == "Metadata"
    assert level(rules, "", "configmaps", "update", "alice") == "Metadata"
    # Who was granted what needs the request body.
    assert level(rules, RBAC_GROUP, "clusterrolebindings", "create", "alice") == "Request"
    # The API server's own requests stay out.
    assert level(rules, "", "secrets", "get", "system:apiserver") == "None"
    assert rules[-1] == {"level": "None"}


def test_the_rig_has_the_examples_rules_plus_pod_writes() -> None:
    example, rig = _rules(EXAMPLE), _rules(RIG)
    assert rig[: len(example) - 1] == example[:-1]
    extra = rig[len(example) - 1 : -1]
    assert [g["resources"] for r in extra for g in r["resources"]] == [["pods"]]
    assert rig[-1] == {"level": "None"}
