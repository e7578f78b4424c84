"""AuditAlertRule: the model refuses what cannot be evaluated safely, with a message that
says what to write instead, and the committed CRD is the one the model generates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from auditlock.alerts.crd import CRD_FILENAME, build_rule_crd, rule_crd_drifted
from auditlock.alerts.model import parse_rule_spec, plain_spec
from auditlock.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "severity": "critical",
        "summary": "{{ actor.name }} read Secret {{ target.name }}",
        "match": [
            {"field": "category", "equals": "access"},
            {"field": "target.resource", "in": ["secrets"]},
        ],
    }
    spec.update(overrides)
    return spec


def _error(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        parse_rule_spec(spec)
    return str(info.value)


def test_a_valid_rule_round_trips_as_the_plain_dict_the_engine_reads() -> None:
    spec = parse_rule_spec(
        _spec(groupBy=["actor.name"], threshold={"count": 5, "windowSeconds": 60})
    )
    plain = plain_spec(spec)
    assert plain["match"][1] == {"field": "target.resource", "in": ["secrets"], "negate": False}
    assert plain["groupBy"] == ["actor.name"]
    assert plain["threshold"] == {"count": 5, "windowSeconds": 60}


def test_a_condition_needs_exactly_one_test() -> None:
    text = _error(_spec(match=[{"field": "actor.name", "equals": "a", "glob": "b*"}]))
    assert "set exactly one of equals, in, glob or regex, got 2" in text
    assert "got 0" in _error(_spec(match=[{"field": "actor.name"}]))


def test_a_field_that_is_not_an_event_field_names_the_details_hint() -> None:
    text = _error(_spec(match=[{"field": "user", "equals": "a"}]))
    assert "user is not an event field" in text and "details" in text


@pytest.mark.parametrize(
    ("regex", "words"),
    [
        ("(a+)+$", "a repeat inside a repeat"),
        ("(x|xy)*z", "an alternation inside a repeat"),
        (".*a.*b", "more than 1 backtracking unbounded repeat"),
        ("(?<=a)b", "look-ahead and look-behind"),
        (r"(a)\1", "back-references"),
        ("a{1,5000}", "a counted repeat above 100"),
        ("x" * 300, "at most 256 characters"),
        ("([a-z]", "does not compile"),
    ],
)
def test_catastrophic_or_oversized_regexes_are_refused(regex: str, words: str) -> None:
    assert words in _error(_spec(match=[{"field": "actor.name", "regex": regex}]))


def test_templates_name_fields_and_nothing_else() -> None:
    assert "no expressions" in _error(_spec(summary="{{ actor.name | upper }}"))
    assert "nope is not an event field" in _error(_spec(summary="hi {{ nope }}"))
    parse_rule_spec(_spec(summary="{{ count }} failures by {{ actor.name }} in {{ window }}"))


def test_labels_must_be_routable_and_not_auditlocks_own() -> None:
    assert "set by auditlock" in _error(_spec(labels={"severity": "low"}))
    assert "not a valid Alertmanager label name" in _error(_spec(labels={"team-x": "a"}))


def test_absence_and_match_exclude_each_other() -> None:
    assert "set match" in _error(_spec(match=[]))
    text = _error(_spec(absence={"forSeconds": 120}))
    assert "an absence rule takes no match" in text
    parse_rule_spec({"summary": "silent", "absence": {"forSeconds": 120}})
    assert "greater than or equal to 60" in _error({"summary": "s", "absence": {"forSeconds": 5}})


def test_committed_crd_matches_the_model(tmp_path: Path) -> None:
    assert not rule_crd_drifted(ROOT / "crds"), "run `auditlock crds -o crds`"
    assert main(["crds", "-o", str(tmp_path)]) == 0
    assert (tmp_path / CRD_FILENAME).exists()
    assert main(["crds", "--check", "-o", str(tmp_path)]) == 0


def test_crd_has_status_printer_columns_and_cel_for_one_test() -> None:
    version = build_rule_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:4] == ["Ready", "Severity", "Firing", "Last-Fired"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    condition = spec["properties"]["match"]["items"]
    assert "has(self.__in__)" in condition["x-kubernetes-validations"][0]["rule"]
    assert "absence" in spec["x-kubernetes-validations"][0]["rule"]


def test_the_admission_review_answers_with_the_models_words() -> None:
    import json

    from auditlock.operator.alert_rules import review

    def ask(spec: Any) -> dict[str, Any]:
        body = {"request": {"uid": "u1", "object": {"metadata": {"name": "r"}, "spec": spec}}}
        return review(json.dumps(body).encode())["response"]

    assert ask(_spec()) == {"uid": "u1", "allowed": True}
    refused = ask(_spec(labels={"severity": "x"}))
    assert not refused["allowed"] and refused["status"]["code"] == 422
    assert refused["status"]["message"].startswith("AuditAlertRule r is invalid: labels")
    assert review(b"not json")["response"]["allowed"] is True  # checked again before use
