"""normalize → filter → redact: raw records become ledger events, or a precise rejection."""

from __future__ import annotations

from typing import Any

import pytest

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.errors import PROBLEM_CODES
from auditlock.ledger.normalize import normalize_event
from auditlock.sidecar.config import MatchRule, PipelineConfig, SourceIdentity
from auditlock.sidecar.pipeline import Pipeline, Rejected
from auditlock.sidecar.pipeline.redact import MARKER

NS = 1_764_428_645_123_456_789
IDENTITY = SourceIdentity(cluster="c1", namespace="shop", pod="api-1", container="c", node="n")


def pipeline(**config: Any) -> Pipeline:
    return Pipeline(PipelineConfig(**config), IDENTITY)


def test_minimal_record_becomes_a_valid_ledger_event() -> None:
    event = pipeline().process(
        "forward", "app.access", NS, {"action": "read", "actor": "alice", "target": "orders/1"}
    )
    assert event is not None
    assert normalize_event(event) == event
    assert event["category"] == "access"
    assert event["time"] == "2025-11-29T15:04:05.123456789Z"
    assert event["actor"] == {"kind": "user", "name": "alice"}
    assert event["target"] == {"resource": "orders/1"}
    assert event["source"] == {
        "cluster": "c1", "namespace": "shop", "pod": "api-1", "container": "c", "node": "n"
    }  # fmt: skip
    assert event["details"]["intake"] == {"input": "forward", "tag": "app.access"}
    assert event["outcome"] == "unknown"


def test_every_event_gets_a_distinct_id() -> None:
    p = pipeline()
    record = {"category": "data", "action": "edit", "actor": "a", "target": "t"}
    ids = {p.process("http", "http", NS, dict(record))["id"] for _ in range(1000)}  # type: ignore[index]
    assert len(ids) == 1000


def test_extra_members_go_to_details_and_floats_become_strings() -> None:
    event = pipeline().process(
        "forward",
        "x",
        NS,
        {
            "category": "data",
            "action": "edit",
            "actor": {"kind": "serviceaccount", "name": "sa", "ip": "10.0.0.1"},
            "target": {"resource": "orders", "namespace": "shop"},
            "request_id": "r-1",
            "amount": 12.5,
            "nested": {"ratio": 0.25, "raw": b"text"},
        },
    )
    assert event is not None
    assert event["details"]["amount"] == "12.5"
    assert event["details"]["nested"] == {"ratio": "0.25", "raw": "text"}
    assert event["correlation"] == {"request_id": "r-1"}
    assert event["actor"]["ip"] == "10.0.0.1"


@pytest.mark.parametrize(
    ("record", "reason", "field"),
    [
        ({"action": "a", "actor": "x", "target": "t"}, "missing_field", "category"),
        ({"category": "nope", "action": "a", "actor": "x", "target": "t"}, "bad_value", "category"),
        ({"category": "data", "actor": "x", "target": "t"}, "missing_field", "action"),
        ({"category": "data", "action": "a", "target": "t"}, "missing_field", "actor"),
        ({"category": "data", "action": "a", "actor": "x", "target": "t", "k": "\udcff"},
         "invalid_utf8", "details.k"),
        ({"category": "data", "action": "a", "actor": "x", "target": "t", "big": 2**60},
         "bad_value", "details.big"),
        ({"category": "data", "action": "a", "actor": "x", "target": "t", "time": "yesterday"},
         "bad_value", "time"),
        # An actor name that is not a string, not even hashable (was a TypeError).
        ({"category": "data", "action": "a", "actor": {"name": []}, "target": "t"},
         "bad_value", "actor.name"),
    ],
)  # fmt: skip
def test_bad_records_are_rejected_with_reason_and_field(
    record: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(Rejected) as caught:
        pipeline().process("http", "http", NS, record)
    assert (caught.value.reason, caught.value.field) == (reason, field), str(caught.value)


BASE = {"category": "data", "action": "a", "actor": "x", "target": "t"}


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        # Words in the message or in the sender's own text do not make the label.
        ({"actor": {"kind": "user", "name": "x", "ip": "missing type"}}, "bad_value", "actor.ip"),
        ({"target": {"resource": "t", "name": ""}}, "bad_value", "target.name"),
        ({"target": {"resource": "t", "name": "\udcff"}}, "invalid_utf8", "target.name"),
        ({"target": {"name": "t"}}, "missing_field", "target.resource"),
        ({"details": {"x": {"y": object()}}}, "bad_type", "details.x.y"),
        ({"details": {"x": {5: "unicode required type"}}}, "bad_value", "details.x"),
        ({"details": {"x": {"\U0001f600": 1}}}, "bad_value", "details.x.\U0001f600"),
        ({"id": "missing required"}, "bad_value", "id"),
    ],
)  # fmt: skip
def test_reason_labels_come_from_the_ledgers_error_codes(
    change: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(Rejected) as caught:
        pipeline().process("http", "http", NS, {**BASE, **change})
    assert caught.value.reason in PROBLEM_CODES
    assert (caught.value.reason, caught.value.field) == (reason, field), str(caught.value)


def test_non_object_record_is_rejected() -> None:
    with pytest.raises(Rejected) as caught:
        pipeline().process("forward", "app.access", NS, ["not", "a", "map"])
    assert caught.value.reason == "bad_record"


def test_filter_by_category_include_and_exclude() -> None:
    p = pipeline(
        categories=["access", "data"],
        include=[MatchRule(field="actor.name", values=["alice", "bob"])],
        exclude=[MatchRule(field="action", values=["healthcheck"])],
    )
    base = {"actor": "alice", "target": "t"}
    assert p.process("h", "h", NS, {**base, "category": "access", "action": "read"})
    assert p.process("h", "h", NS, {**base, "category": "alert", "action": "x"}) is None
    assert p.process("h", "h", NS, {**base, "category": "data", "action": "healthcheck"}) is None
    other = {"actor": "eve", "target": "t", "category": "data", "action": "read"}
    assert p.process("h", "h", NS, other) is None


def test_redaction_replaces_configured_paths_before_spooling() -> None:
    p = pipeline(redact=["details.password", "actor.ip", "details.missing.path"])
    event = p.process(
        "http",
        "http",
        NS,
        {
            "category": "access",
            "action": "login",
            "actor": {"kind": "user", "name": "a", "ip": "10.1.1.1"},
            "target": "login",
            "password": "hunter2",
        },
    )
    assert event is not None
    assert event["details"]["password"] == MARKER
    assert event["actor"]["ip"] == MARKER
    assert "hunter2" not in repr(event)


def test_redacting_shared_parts_does_not_leak_into_other_events() -> None:
    p = pipeline(redact=["source.pod", "details.intake.tag"])
    record = {"category": "access", "action": "a", "actor": "x", "target": "t"}
    first = p.process("forward", "app.access", NS, dict(record))
    second = p.process("forward", "app.access", NS, dict(record))
    assert first is not None and second is not None
    assert first["source"]["pod"] == MARKER == second["source"]["pod"]
    assert p.normalize._source["pod"] == "api-1"  # the sidecar's identity is intact
    assert second["details"]["intake"] == {"input": "forward", "tag": MARKER}


def test_the_identity_is_checked_once_and_shared_by_every_event() -> None:
    p = pipeline()
    record = {"category": "access", "action": "a", "actor": "x", "target": "t"}
    first = p.process("forward", "app.access", NS, dict(record))
    second = p.process("forward", "app.access", NS, dict(record))
    assert first is not None and second is not None
    assert first["source"] is second["source"] is p.normalize._checked_source


def test_an_identity_the_ledger_refuses_rejects_every_event_with_its_reason() -> None:
    p = Pipeline(PipelineConfig(), SourceIdentity(cluster="c1", pod="p" * 1025))
    assert p.normalize._checked_source is None  # not pre-checked: each event is
    record = {"category": "access", "action": "a", "actor": "x", "target": "t"}
    for _ in range(2):
        with pytest.raises(Rejected) as caught:
            p.process("forward", "app.access", NS, dict(record))
        assert (caught.value.reason, caught.value.field) == ("bad_value", "source.pod")


def test_a_record_cannot_bring_its_own_source_or_intake() -> None:
    record = {
        "category": "access",
        "action": "a",
        "actor": "x",
        "target": "t",
        "source": {"pod": "evil"},
        "details": {"intake": {"input": "forged"}},
    }
    event = pipeline().process("forward", "app.access", NS, record)
    assert event is not None
    assert event["source"]["pod"] == "api-1"
    assert event["details"]["intake"] == {"input": "forward", "tag": "app.access"}


def test_an_intake_tag_the_ledger_refuses_is_named() -> None:
    record = {"category": "access", "action": "a", "actor": "x", "target": "t"}
    p = pipeline()
    for _ in range(2):  # the second time from the (input, tag) cache
        with pytest.raises(Rejected) as caught:
            p.process("forward", "app.\udcff", NS, dict(record))
        assert (caught.value.reason, caught.value.field) == ("invalid_utf8", "details.intake.tag")


def test_process_all_gives_canonical_bytes_rejections_and_filtered() -> None:
    p = pipeline(categories=["access", "data"])
    good = {"category": "access", "action": "a", "actor": "x", "target": "t", "id": "e-1"}
    entries = [
        ("app.access", NS, dict(good)),
        ("app.access", NS, {"category": "access", "actor": "x", "target": "t"}),
        ("app.alert", NS, {"action": "a", "actor": "x", "target": "t"}),
    ]
    out = p.process_all("forward", entries)
    expected = p.process("forward", "app.access", NS, dict(good))
    assert out.events == [canonical_bytes(expected)]
    assert [(i, r.field) for i, r in out.rejected] == [(1, "action")]
    assert out.filtered == 1 and out.unstorable == []


def test_process_all_refuses_an_event_without_canonical_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = pipeline()
    # A gap in validation (the normalizer passes something orjson cannot encode).
    monkeypatch.setattr(p, "normalize", lambda *args: {"category": "access", "x": object()})
    out = p.process_all("forward", [("app.access", NS, {})])
    assert out.events == [] and out.rejected == []
    assert [(r.reason, r.field) for r in out.unstorable] == [("bad_value", "record")]


def test_the_filter_is_skipped_only_when_it_keeps_everything() -> None:
    assert pipeline().filter.keeps_everything
    assert not pipeline(categories=["access"]).filter.keeps_everything
    assert not pipeline(exclude=[MatchRule(field="action", values=["x"])]).filter.keeps_everything
    assert not pipeline(include=[MatchRule(field="action", values=["x"])]).filter.keeps_everything
