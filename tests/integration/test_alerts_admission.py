"""`kubectl apply` of an AuditAlertRule: the real API server applies the generated CRD's
schema and CEL rules (one test per condition, match or absence), and shows the printer
columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.servers.kube_controlplane import KubeControlPlane


def _rule(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "auditlock.io/v1alpha1",
        "kind": "AuditAlertRule",
        "metadata": {"name": name},
        "spec": spec,
    }


def _apply(kube: KubeControlPlane, namespace: str, doc: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return kube.kubectl("apply", "-n", namespace, "-f", str(path), check=False)


def test_a_valid_rule_applies_and_shows_its_columns(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    doc = _rule(
        "denied",
        {
            "severity": "critical",
            "summary": "{{ count }} refusals for {{ actor.name }}",
            "match": [
                {"field": "category", "equals": "authorization"},
                {"field": "details.status_code", "in": ["401", "403"]},
            ],
            "groupBy": ["actor.name"],
            "threshold": {"count": 5, "windowSeconds": 60},
        },
    )
    assert _apply(auditpolicy_crd, kube_namespace, doc, tmp_path).returncode == 0
    shown = auditpolicy_crd.kubectl("get", "auditalertrules", "-n", kube_namespace).stdout
    assert shown.split("\n")[0].split() == [
        "NAME",
        "READY",
        "SEVERITY",
        "FIRING",
        "LAST-FIRED",
        "AGE",
    ]
    assert "denied" in shown and "critical" in shown
    stored = auditpolicy_crd.kubectl(
        "get", "aar", "denied", "-n", kube_namespace, "-o", "yaml"
    ).stdout
    assert yaml.safe_load(stored)["spec"]["resolveAfterSeconds"] == 300  # default filled in


def test_two_tests_in_one_condition_and_match_with_absence_are_refused(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    both = _rule(
        "both",
        {"summary": "x", "match": [{"field": "actor.name", "equals": "a", "in": ["b"]}]},
    )
    result = _apply(auditpolicy_crd, kube_namespace, both, tmp_path)
    assert result.returncode != 0
    assert "spec.match[0]" in result.stderr
    assert "set exactly one of equals, in, glob or regex" in result.stderr
    mixed = _rule(
        "mixed",
        {
            "summary": "x",
            "absence": {"forSeconds": 120},
            "match": [{"field": "actor.name", "equals": "a"}],
        },
    )
    result = _apply(auditpolicy_crd, kube_namespace, mixed, tmp_path)
    assert result.returncode != 0 and "set match" in result.stderr
    bad_path = _rule("path", {"summary": "x", "match": [{"field": "user", "equals": "a"}]})
    result = _apply(auditpolicy_crd, kube_namespace, bad_path, tmp_path)
    assert result.returncode != 0 and "user is not an event field" in result.stderr
