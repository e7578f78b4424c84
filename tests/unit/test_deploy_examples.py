"""examples/: the AuditPolicies are valid policies (the operator's own model), and the
sample app is selected by them and talks to the collector's Forward port.
(tests/integration/test_chart_install.py also applies them to a real API server.)"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditlock.policy.model import API_VERSION, KIND, AuditPolicySpec, ForwardSourceSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
POLICY_FILES = sorted(EXAMPLES.glob("auditpolicy-*.yaml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _policy(path: Path) -> dict[str, Any]:
    (doc,) = _docs(path)
    return doc


def _sample_app() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {d["kind"]: d for d in _docs(EXAMPLES / "sample-app.yaml")}
    return docs["ConfigMap"], docs["Deployment"]


def test_one_example_per_destination_scheme() -> None:
    schemes = {next(iter(_policy(p)["spec"]["destination"])): p.name for p in POLICY_FILES}
    assert set(schemes) == {"gcs", "s3", "file"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_example_policy_is_valid(path: Path) -> None:
    doc = _policy(path)
    assert doc["apiVersion"] == API_VERSION and doc["kind"] == KIND
    assert "namespace" not in doc["metadata"], "examples are applied with -n"
    spec = AuditPolicySpec.model_validate(doc["spec"])
    assert spec.retention.days >= 1


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_file_parses_as_kubernetes_objects(path: Path) -> None:
    docs = _docs(path)
    assert docs and all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs)


def test_sample_app_is_selected_by_the_s3_and_file_policies() -> None:
    _, deployment = _sample_app()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for name in ("auditpolicy-s3.yaml", "auditpolicy-file.yaml"):
        selector = _policy(EXAMPLES / name)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name


def test_sample_app_emits_with_fluent_logger_to_the_collector() -> None:
    config_map, deployment = _sample_app()
    source = config_map["data"]["emit.py"]
    tree = ast.parse(source)  # it is valid Python
    imports = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "fluent" in imports
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "FluentSender"
    ]
    assert calls, "fluent.sender.FluentSender is used"
    kwargs = {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords}
    default_port = ForwardSourceSpec().port
    assert kwargs == {"host": "127.0.0.1", "port": default_port}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "/app/emit.py"]
    mount = container["volumeMounts"][0]
    assert mount["mountPath"] == "/app"
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    # Same image family the chart injects: it carries Python and fluent-logger.
    assert container["image"].startswith("auditlock/sidecar:")


def test_s3_example_uses_the_demo_credentials_secret() -> None:
    spec = _policy(EXAMPLES / "auditpolicy-s3.yaml")["spec"]
    (secret,) = _docs(EXAMPLES / "demo" / "s3-credentials.yaml")
    assert spec["destination"]["s3"]["credentialsSecret"]["name"] == secret["metadata"]["name"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    identities = _docs(EXAMPLES / "demo" / "seaweedfs.yaml")[1]["stringData"]["identities.json"]
    assert secret["stringData"]["AWS_ACCESS_KEY_ID"] in identities
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] in identities
