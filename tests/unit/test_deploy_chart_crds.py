"""The chart's CRDs are exact copies of crds/, which is generated from the policy model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from auditlock.policy.crd import build_crd

ROOT = Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / "charts" / "auditlock" / "templates" / "crds"


def _sync_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sync_chart_crds", ROOT / "scripts" / "sync-chart-crds.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strip_template(text: str) -> dict[str, Any]:
    """The chart file as the API server would get it with crds.keep=false."""
    lines = [line for line in text.splitlines() if "{{" not in line]
    lines = [line for line in lines if line.strip() != "helm.sh/resource-policy: keep"]
    data: dict[str, Any] = yaml.safe_load("\n".join(lines))
    return data


def test_chart_crds_match_crds_folder() -> None:
    problems = _sync_script().drifted()
    assert not problems, "\n".join(problems)


def test_chart_crd_is_the_model_generated_crd() -> None:
    # Guards the whole chain model -> crds/ -> chart, whichever link is stale.
    chart_crd = _strip_template((CHART_CRDS / "auditlock.io_auditpolicies.yaml").read_text())
    assert chart_crd == build_crd()


def test_keep_annotation_and_install_switch_are_templated() -> None:
    text = (CHART_CRDS / "auditlock.io_auditpolicies.yaml").read_text()
    assert text.startswith("{{- if .Values.crds.install }}\n")
    assert text.rstrip().endswith("{{- end }}")
    assert "{{- if .Values.crds.keep }}\n    helm.sh/resource-policy: keep\n" in text


def test_sync_refuses_crd_text_helm_would_template(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata: {name: x}\nspec: {description: 'use {{ .Values }}'}\n"
    )
    with pytest.raises(ValueError, match="Helm would template"):
        _sync_script().render_chart_crd(bad)
