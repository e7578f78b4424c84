"""Where the test rig finds its binaries: kube-apiserver, etcd, kubectl, helm.

Order, first hit wins:

1. a per-binary override: `AUDITLOCK_KUBE_APISERVER`, `AUDITLOCK_ETCD`,
   `AUDITLOCK_KUBECTL`, `AUDITLOCK_HELM` (a path to the executable);
2. `KUBEBUILDER_ASSETS` (controller-runtime's envtest convention: one folder holding
   `kube-apiserver`, `etcd`, `kubectl`; we also look for `helm` there);
3. the project's cache, filled by `make bootstrap` (scripts/bootstrap.d/):
   `${AUDITLOCK_CACHE:-~/.cache/auditlock}/envtest/<KUBE_VERSION>/` and, for kubectl and
   helm, `.../kubectl-helm/<package version>/`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "scripts" / "envtest" / "versions.env"

_OVERRIDES = {
    "kube-apiserver": "AUDITLOCK_KUBE_APISERVER",
    "etcd": "AUDITLOCK_ETCD",
    "kubectl": "AUDITLOCK_KUBECTL",
    "helm": "AUDITLOCK_HELM",
}


class KubeRigError(RuntimeError):
    """The test control plane could not be provided. The message says what failed, where
    its log is, and what to do next."""


def pinned_versions() -> dict[str, str]:
    """KUBE_VERSION and ETCD_VERSION from scripts/envtest/versions.env."""
    versions: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    return Path(os.environ.get("AUDITLOCK_CACHE") or Path.home() / ".cache" / "auditlock")


def assets_dir() -> Path:
    """The envtest folder in use: KUBEBUILDER_ASSETS, or the bootstrap cache."""
    configured = os.environ.get("KUBEBUILDER_ASSETS")
    if configured:
        return Path(configured)
    return cache_dir() / "envtest" / pinned_versions()["KUBE_VERSION"]


def _candidates(name: str) -> list[Path]:
    found: list[Path] = []
    override = os.environ.get(_OVERRIDES[name])
    if override:
        return [Path(override)]
    found.append(assets_dir() / name)
    if name in ("kubectl", "helm"):
        found.extend(sorted((cache_dir() / "kubectl-helm").glob(f"*/{name}"), reverse=True))
    return found


def find_binary(name: str) -> Path:
    """The path of executable `name`, or a KubeRigError listing where we looked."""
    looked = _candidates(name)
    for path in looked:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    where = ", ".join(str(p) for p in looked) or "(nowhere)"
    raise KubeRigError(
        f"{name} not found (looked in: {where}). Run `make bootstrap` "
        f"(scripts/bootstrap.d/ builds or fetches it into {cache_dir()}), "
        f"or set KUBEBUILDER_ASSETS to a folder with kube-apiserver, etcd and kubectl, "
        f"or set {_OVERRIDES[name]} to the executable."
    )
