"""Shared by the chart tests: render charts/auditlock with the real helm binary, and
install it into the real test API server (fixture `chart_release`, registered in
tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers.kube_controlplane import KubeControlPlane

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "auditlock"
RELEASE = "audit"
NAMESPACE = "auditlock-system"


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its stderr."""


def helm(helm_path: Path, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(helm_path), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def set_args(values: dict[str, Any] | None) -> list[str]:
    """`--set-json` arguments for a nested dict of overrides (exact types, no string parsing)."""
    args: list[str] = []
    for path, value in _flatten(values or {}):
        args += ["--set-json", f"{path}={json.dumps(value)}"]
    return args


def _flatten(values: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, path + ".")
        else:
            yield path, value


def render(
    helm_path: Path,
    values: dict[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
    include_crds: bool = True,
    kube_version: str | None = None,
    api_versions: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """`helm template` -> the list of rendered objects. `api_versions` are what the
    offline render pretends the API server serves (`.Capabilities.APIVersions`)."""
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, *set_args(values)]
    if include_crds:
        args.append("--include-crds")
    if kube_version:
        args += ["--kube-version", kube_version]
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    return load_manifest(helm(helm_path, *args))


def load_manifest(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML manifest, parsed with libyaml's safe loader
    when PyYAML has it: the chart's manifest is ~85 KB, which the pure-Python parser takes
    about 0.3 s over (10 times libyaml), and the chart tests render it dozens of times."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(text, Loader=loader) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    """The first `kind` object whose name ends with `suffix`."""
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    assert found, f"no {kind} named *{suffix}"
    return found[0]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# -- the chart installed into the real test API server ---------------------------------


@dataclass
class InstalledRelease:
    """charts/auditlock installed by helm into the session's API server."""

    kube: KubeControlPlane
    helm_path: Path
    namespace: str
    values: dict[str, Any]
    install_output: str

    def helm(self, *args: str) -> str:
        return helm(
            self.helm_path,
            *args,
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(self.kube.kubeconfig),
        )

    def manifest(self) -> list[dict[str, Any]]:
        """What helm applied (templates; CRDs from crds/ are not part of it)."""
        return load_manifest(self.helm("get", "manifest", RELEASE))

    def service_account(self) -> str:
        account = next(o for o in self.manifest() if o["kind"] == "ServiceAccount")
        return str(account["metadata"]["name"])

    def uninstall(self) -> None:
        """`helm uninstall`; a release already gone is fine."""
        try:
            self.helm("uninstall", RELEASE, "--wait", "--timeout", "60s")
        except HelmError as err:
            if "not found" not in str(err):
                raise

    def upgrade(self, values: dict[str, Any]) -> str:
        self.values = values
        return self.helm("upgrade", RELEASE, str(CHART), *set_args(values))


def install_release(
    kube: KubeControlPlane, helm_path: Path, values: dict[str, Any] | None = None
) -> Iterator[InstalledRelease]:
    """Install into a fresh namespace; uninstall and delete it afterwards.

    The API server here has no nodes, so the operator pods stay Pending and the webhook
    Service has no endpoints: both webhooks are narrowed to namespaces carrying a label
    only this release's tests set, or they would refuse (failurePolicy Fail) every pod
    other tests create in this shared API server.
    """
    namespace = kube.create_namespace()
    merged = {"webhook": {"namespaceMatchLabels": {"auditlock-chart-test": namespace}}}
    merged.update(values or {})
    args = ["install", RELEASE, str(CHART), *set_args(merged)]
    # The AuditPolicy CRD may already exist (other tests apply crds/ directly): adopt it.
    args += ["--take-ownership", "--namespace", namespace, "--kubeconfig", str(kube.kubeconfig)]
    output = helm(helm_path, *args)
    release = InstalledRelease(kube, helm_path, namespace, merged, output)
    try:
        yield release
    finally:
        try:
            release.uninstall()
        finally:
            kube.delete_namespace(namespace)


@pytest.fixture(scope="module")
def chart_release(kube_apiserver: KubeControlPlane, helm_path: Path) -> Iterator[InstalledRelease]:
    """The chart with default values (plus the test-only webhook narrowing)."""
    yield from install_release(kube_apiserver, helm_path)
