"""Shared by the chart tests: render charts/auditlock with the real helm binary."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

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
) -> list[dict[str, Any]]:
    """`helm template` -> the list of rendered objects."""
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, *set_args(values)]
    if include_crds:
        args.append("--include-crds")
    if kube_version:
        args += ["--kube-version", kube_version]
    return [d for d in yaml.safe_load_all(helm(helm_path, *args)) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
