"""The Prometheus Operator's CRDs (PrometheusRule, ServiceMonitor, PodMonitor) installed in
the test API server, so it validates the chart's monitoring objects against their real
schemas, as a cluster running the Prometheus Operator does.

The CRD files come from the Go module github.com/prometheus-operator/prometheus-operator
(scripts/bootstrap.d/45-prometheus-operator-crds.sh caches them);
`AUDITLOCK_PROMETHEUS_OPERATOR_CRDS` names another folder holding them.

Fixture: `prometheus_operator_crds` (session): the control plane, with the CRDs
Established. Cluster-scoped, harmless to other tests (nothing watches them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.servers.auditlock_operator import _apply_one_crd
from tests.servers.kube_assets import cache_dir
from tests.servers.kube_controlplane import KubeControlPlane

VERSION = "v0.85.0"  # keep equal to scripts/bootstrap.d/45-prometheus-operator-crds.sh
KINDS = ("prometheusrules", "servicemonitors", "podmonitors")


def crd_files() -> list[Path]:
    folder = Path(
        os.environ.get("AUDITLOCK_PROMETHEUS_OPERATOR_CRDS")
        or cache_dir() / "prometheus-operator-crds" / VERSION
    )
    files = [folder / f"monitoring.coreos.com_{kind}.yaml" for kind in KINDS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.fail(
            f"Prometheus Operator CRDs missing: {', '.join(missing)}; run "
            "`bash scripts/bootstrap.d/45-prometheus-operator-crds.sh` "
            "or set AUDITLOCK_PROMETHEUS_OPERATOR_CRDS"
        )
    return files


@pytest.fixture(scope="session")
def prometheus_operator_crds(kube_apiserver: KubeControlPlane) -> KubeControlPlane:
    for path in crd_files():
        _apply_one_crd(kube_apiserver, yaml.safe_load(path.read_text()), timeout=30.0)
    return kube_apiserver
