"""The CRD in crds/ is generated from the pydantic model and stays structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from auditlock.cli.main import main
from auditlock.policy.crd import CRD_FILENAME, build_crd, drifted_crds, render_crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_committed_crd_matches_the_model() -> None:
    drifted = drifted_crds(ROOT / "crds")
    assert not drifted, "crds/ drifted from the model: run `auditlock crds -o crds`"


def test_drift_is_detected(tmp_path: Path) -> None:
    (tmp_path / CRD_FILENAME).write_text(render_crd_yaml().replace("minimum: 1", "minimum: 0"))
    assert drifted_crds(tmp_path) == [tmp_path / CRD_FILENAME]
    assert main(["crds", "--check", "-o", str(tmp_path)]) == 1
    assert main(["crds", "-o", str(tmp_path)]) == 0
    assert main(["crds", "--check", "-o", str(tmp_path)]) == 0


def test_every_spec_and_status_field_has_a_type_and_description() -> None:
    schema = _schema()
    for root in ("spec", "status"):
        for path, node in _walk(schema["properties"][root], root):
            assert "type" in node, path
            assert "$ref" not in node and "anyOf" not in node, path
            if not path.endswith("[]") and not path.endswith("}"):
                assert node.get("description"), f"{path} has no description"


def test_schema_encodes_validation_rules() -> None:
    spec = _schema()["properties"]["spec"]
    assert set(spec["required"]) == {"destination", "retention"}
    destination = spec["properties"]["destination"]
    assert destination["minProperties"] == 1 and destination["maxProperties"] == 1
    assert spec["properties"]["retention"]["properties"]["days"]["minimum"] == 1
    assert spec["properties"]["enforcement"]["enum"] == ["optional", "required"]


def test_status_subresource_and_printer_columns() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [
        c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert names == [
        "READY",
        "PODS",
        "UNAUDITED",
        "DESTINATION",
        "RETENTION",
        "LOCKED",
        "LAST-CHECKPOINT",
        "AGE",
    ]


def test_rendered_yaml_round_trips() -> None:
    assert yaml.safe_load(render_crd_yaml()) == build_crd()
