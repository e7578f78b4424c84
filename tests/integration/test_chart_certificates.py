"""The chart's per-pod key settings (values `certificates.*`), rendered by the real helm
binary: the root key is mounted into the operator alone, and the ClusterRole grows by
exactly what certifying needs (docs/operator.md, "Per-pod keys")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.chart_helpers import NAMESPACE, HelmError, one, render


def _rules(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    role = one(objects, "ClusterRole")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_a_root_key_secret_is_mounted_into_the_operator_alone(helm_path: Path) -> None:
    plain = render(helm_path)
    objects = render(helm_path, {"certificates": {"rootKeySecret": "auditlock-root"}})
    added = _rules(objects) - _rules(plain)
    assert added == {("authentication.k8s.io", "tokenreviews", "create"), ("", "pods", "get")}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "root-key")
    assert volume["secret"] == {"secretName": "auditlock-root", "defaultMode": 0o400}
    mounted = [c["name"] for c in pod["containers"]
               if any(m["name"] == "root-key" for m in c.get("volumeMounts", []))]  # fmt: skip
    assert mounted == ["operator"]
    operator = next(c for c in pod["containers"] if c["name"] == "operator")
    args = operator["args"]
    assert "--root-key-file=/var/run/auditlock/root-key/signing.key" in args
    assert any(a.startswith("--certificate-url=https://") and
               a.endswith(f".{NAMESPACE}.svc:443/v1/certificates") for a in args)  # fmt: skip
    assert not any(v.get("name") == "root-key" for v in
                   one(plain, "Deployment")["spec"]["template"]["spec"]["volumes"])  # fmt: skip


def test_a_bad_certificate_setting_is_refused_by_the_schema(helm_path: Path) -> None:
    with pytest.raises(HelmError):
        render(helm_path, {"certificates": {"validitySeconds": 10}})
