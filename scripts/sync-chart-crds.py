#!/usr/bin/env python3
"""Copy the generated CRDs from crds/ into the Helm chart as templates.

crds/ is generated from the AuditPolicy model (`auditlock crds`); the chart carries the
same CRDs under charts/auditlock/templates/crds/ so `helm upgrade` updates them (Helm's
own crds/ folder is installed once and never upgraded). Each copy is wrapped in
`crds.install` and gets a `helm.sh/resource-policy: keep` annotation when `crds.keep` is
set, so uninstalling the chart does not delete every AuditPolicy with the CRD.

    python scripts/sync-chart-crds.py          # rewrite the chart's copies
    python scripts/sync-chart-crds.py --check  # exit 1 when a copy has drifted

tests/unit/test_deploy_chart_crds.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = ROOT / "crds"
CHART_DIR = ROOT / "charts" / "auditlock" / "templates" / "crds"

_KEEP_PLACEHOLDER = "__auditlock_keep_placeholder__"
_KEEP_TEMPLATE = (
    "    {{- if .Values.crds.keep }}\n    helm.sh/resource-policy: keep\n    {{- end }}\n"
)


def render_chart_crd(source: Path) -> str:
    """The chart template text for one generated CRD file."""
    text = source.read_text(encoding="utf-8")
    if "{{" in text or "}}" in text:
        # Helm would try to evaluate it; a description with braces needs escaping first.
        raise ValueError(f"{source}: contains '{{{{' or '}}}}', which Helm would template")
    crd: dict[str, Any] = yaml.safe_load(text)
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{source}: not a CustomResourceDefinition")
    crd["metadata"].setdefault("annotations", {})[_KEEP_PLACEHOLDER] = "x"
    body = yaml.safe_dump(crd, sort_keys=False, width=100)
    body = body.replace(f"    {_KEEP_PLACEHOLDER}: x\n", _KEEP_TEMPLATE)
    if _KEEP_PLACEHOLDER in body:
        raise ValueError(f"{source}: could not place the keep annotation")
    return (
        "{{- if .Values.crds.install }}\n"
        f"# Copied by scripts/sync-chart-crds.py from crds/{source.name}. Do not edit:\n"
        "# change src/auditlock/policy/model.py, run `auditlock crds`, then this script.\n"
        f"{body}"
        "{{- end }}\n"
    )


def expected_files() -> dict[Path, str]:
    """Every chart CRD template as it should be, keyed by its path."""
    sources = sorted(SOURCE_DIR.glob("*.yaml"))
    if not sources:
        raise FileNotFoundError(f"no generated CRDs in {SOURCE_DIR}; run `auditlock crds`")
    return {CHART_DIR / src.name: render_chart_crd(src) for src in sources}


def drifted() -> list[str]:
    """Human-readable reasons the chart's copies differ from crds/; empty when in sync."""
    want = expected_files()
    problems = [
        f"{path.relative_to(ROOT)}: missing or out of date"
        for path, text in want.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    problems += [
        f"{path.relative_to(ROOT)}: no longer generated (no crds/{path.name}); delete it"
        for path in sorted(CHART_DIR.glob("*.yaml"))
        if path not in want
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = drifted()
        for problem in problems:
            print(f"{problem}; run python scripts/sync-chart-crds.py", file=sys.stderr)
        return 1 if problems else 0
    CHART_DIR.mkdir(parents=True, exist_ok=True)
    want = expected_files()
    for stale in set(CHART_DIR.glob("*.yaml")) - set(want):
        stale.unlink()
    for path, text in want.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
