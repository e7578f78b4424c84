"""`kubectl apply` of an AuditPolicy whose filter or redaction path names no event field
is refused by the real API server (CEL in the generated CRD), with the hint that an
app's own fields are stored under `details`; the shipped examples apply. The API
server's verdict and words are the operator model's (policy/paths.py), path by path."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditlock.policy import paths
from tests.servers.kube_controlplane import KubeControlPlane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HINT = "so this is probably details.attributes.card_number"


def _example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return doc


def _apply(
    kube: KubeControlPlane, namespace: str, policy: dict[str, Any], tmp_path: Path, *extra: str
) -> Any:
    path = tmp_path / f"{policy['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return kube.kubectl("apply", "-n", namespace, "-f", str(path), *extra, check=False)


def _field_errors(stderr: str) -> dict[str, str]:
    """`spec...[i]` -> the API server's message for it, from kubectl's output (one error
    follows "is invalid: ", several are listed one per line after "* ")."""
    pattern = r'(?:^\* |is invalid: )(spec\.\S+): Invalid value: "(?:[^"\\]|\\.)*": (.*)$'
    return {m.group(1): m.group(2) for m in re.finditer(pattern, stderr, re.M)}


def test_the_old_s3_example_is_refused_with_the_details_hint(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    policy = _example("auditpolicy-s3.yaml")
    policy["spec"]["redaction"]["fields"] = ["attributes.card_number"]  # as shipped before
    result = _apply(auditpolicy_crd, kube_namespace, policy, tmp_path)
    assert result.returncode != 0
    assert 'The AuditPolicy "orders" is invalid' in result.stderr
    assert "spec.redaction.fields[0]" in result.stderr
    assert "attributes.card_number is not an event field" in result.stderr
    assert HINT in result.stderr
    gone = auditpolicy_crd.kubectl(
        "get", "auditpolicy", "-n", kube_namespace, "orders", check=False
    )
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_an_include_rule_on_a_missing_field_is_refused(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    policy = _example("auditpolicy-s3.yaml")
    policy["spec"]["filters"] = {
        "include": [{"field": "attributes.card_number", "values": ["x"]}],
        "exclude": [{"field": "actor.user", "values": ["system:kube-proxy"]}],
    }
    result = _apply(auditpolicy_crd, kube_namespace, policy, tmp_path)
    assert result.returncode != 0
    assert "spec.filters.include[0].field" in result.stderr and HINT in result.stderr
    assert "spec.filters.exclude[0].field" in result.stderr
    assert "actor.user is not an event field" in result.stderr


def test_a_field_the_marker_would_break_cannot_be_redacted(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    policy = _example("auditpolicy-s3.yaml")
    policy["spec"]["redaction"]["fields"] = ["actor.ip"]
    result = _apply(auditpolicy_crd, kube_namespace, policy, tmp_path)
    assert result.returncode != 0
    assert "actor.ip cannot be redacted: [REDACTED] is not a valid value of it" in result.stderr


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXAMPLES.glob("auditpolicy-*.yaml")), ids=str
)
def test_the_shipped_examples_apply(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path, name: str
) -> None:
    result = auditpolicy_crd.kubectl(
        "apply", "-n", kube_namespace, "-f", str(EXAMPLES / name), check=False
    )
    assert result.returncode == 0, result.stderr
    policy = _example(name)
    assert f"auditpolicy.auditlock.io/{policy['metadata']['name']} created" in result.stdout
    stored = auditpolicy_crd.kubectl(
        "get", "auditpolicy", "-n", kube_namespace, policy["metadata"]["name"], "-o", "yaml"
    )
    spec = yaml.safe_load(stored.stdout)["spec"]
    assert spec.get("redaction") == policy["spec"].get("redaction")


_CANDIDATES = [
    *paths.FIELD_PATHS,
    "details.attributes.card_number",
    "details.intake.tag",
    "details.x",
    "attributes.card_number",
    "card_number",
    "actor.user",
    "actor",
    "details",
    "details.",
    "details..x",
    "details.a.",
    ".details.a",
    "detailsx.a",
    "Details.a",
    "target.field",
    "correlation",
    "source.pod.x",
]


@pytest.mark.parametrize("where", ["redaction", "filter"])
def test_the_api_server_and_the_operator_model_agree_on_every_path(
    auditpolicy_crd: KubeControlPlane, kube_namespace: str, tmp_path: Path, where: str
) -> None:
    """One dry-run apply with every candidate path; each item's verdict and message
    from CEL must be what the model says (the operator's check for API servers
    without CEL)."""
    policy = copy.deepcopy(_example("auditpolicy-file.yaml"))
    if where == "redaction":
        policy["spec"]["redaction"] = {"fields": _CANDIDATES}
        expected = {
            f"spec.redaction.fields[{i}]": paths.redaction_problem(p)
            for i, p in enumerate(_CANDIDATES)
        }
    else:
        policy["spec"]["filters"] = {
            "exclude": [{"field": p, "values": ["x"]} for p in _CANDIDATES]
        }
        expected = {
            f"spec.filters.exclude[{i}].field": paths.path_problem(p)
            for i, p in enumerate(_CANDIDATES)
        }
    result = _apply(auditpolicy_crd, kube_namespace, policy, tmp_path, "--dry-run=server")
    assert result.returncode != 0
    refused = _field_errors(result.stderr)
    wanted = {k: v for k, v in expected.items() if v is not None}
    assert len(wanted) >= 10
    assert refused == wanted, result.stderr
