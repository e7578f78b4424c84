"""What `verify` reports: no finding hides another, only verified lines are counted, a
deleted stored key is named, and each stream says who observed its events (issue 13
points 3 and 6, issue 12 point 13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditlock.ledger.names import key_name
from auditlock.ledger.synth import SimulatedClock
from tests.helpers.events import small

from .ledger_helpers import Ledger, app_and_other, join_lines, lines_of, new_ledger, write_stream


def _report(ledger: Ledger, *extra: str, key: bool = True) -> tuple[int, dict[str, Any]]:
    # events come once a second, sealed 500 at a time: allow that between checkpoints
    code, out = ledger.verify("--json", "--slack", "600", *extra, key=key)
    doc: dict[str, Any] = json.loads(out)
    return code, doc


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return app_and_other(tmp_path, app=(1500, 500))


def _line_index(lines: list[bytes], seq: int) -> int:
    (index,) = [
        i for i, line in enumerate(lines) if line.endswith(b',"seq":%d,"stream":"app"}' % seq)
    ]
    return index


def test_a_duplicated_line_does_not_hide_a_later_edit(ledger: Ledger) -> None:
    name = ledger.segments("app")[0]  # seqs 0..499
    lines = lines_of(ledger.read(name))
    lines.insert(101, lines[100])  # seq 100 twice
    edit = _line_index(lines, 300)
    lines[edit] = lines[edit].replace(b'"name":"', b'"name":"x', 1)  # still a valid event
    ledger.write(name, join_lines(lines))
    code, doc = _report(ledger)
    assert code == 1
    found = [(f["code"], f["first_seq"], f["last_seq"]) for f in doc["findings"]]
    assert found == [
        ("segment-length", 0, 499),
        ("seq-mismatch", 101, 101),
        ("chain-broken", 300, 301),
    ], found
    # the broken checkpoint interval 0..499 is not counted; the tree resynchronised at
    # the checkpoint after it, so 500..1499 and all of "other" are
    assert doc["events_verified"] == 1000 + 30
    streams = {s["stream"]: s["events"] for s in doc["streams"]}
    assert streams == {"app": 1000, "other": 30}


def test_each_independent_problem_is_named_once_with_its_consequences(ledger: Ledger) -> None:
    name = ledger.segments("app")[1]  # seqs 500..999
    lines = lines_of(ledger.read(name))
    del lines[_line_index(lines, 520)]  # deleted event
    first, second = _line_index(lines, 600), _line_index(lines, 601)
    lines[first], lines[second] = lines[second], lines[first]  # two events swapped
    theirs = lines_of(ledger.read(ledger.segments("other")[1]))[2]
    lines[_line_index(lines, 700)] = theirs  # an event spliced in from another stream
    ledger.write(name, join_lines(lines))
    code, doc = _report(ledger)
    assert code == 1
    codes = [(f["code"], f["first_seq"]) for f in doc["findings"]]
    assert ("seq-mismatch", 520) in codes
    assert ("seq-mismatch", 600) in codes
    assert ("foreign-event", 700) in codes or ("foreign-event", 699) in codes
    assert "truncated-report" not in {c for c, _ in codes}
    assert len(codes) <= 5, codes
    swap = next(f for f in doc["findings"] if f["first_seq"] == 600)
    assert "fail as a consequence" in swap["message"]
    assert doc["events_verified"] == 1000 + 30


def test_unsigned_and_unverifiable_lines_are_not_counted(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    writer = write_stream(led, "app", events=20, per_segment=10, close=False)
    for i in range(5):
        writer.append(_event(100 + i, None))
    segment = [o for o in writer.seal() if o.kind == "segment"]
    led.dest.put(segment[0].name, segment[0].data, None)  # stored, never signed
    _, doc = _report(led, "--until", "2026-01-01T00:05:00Z")
    assert {w["code"] for w in doc["warnings"]} >= {"unsigned-events"}
    assert doc["events_verified"] == 20


def test_a_deleted_stored_key_is_reported_even_with_public_key(ledger: Ledger) -> None:
    ledger.delete(key_name(ledger.signer.key_id))
    for with_key in (True, False):
        code, doc = _report(ledger, key=with_key)
        assert code == 1
        missing = [f for f in doc["findings"] if f["code"] == "key-missing"]
        assert missing, doc["findings"]
        assert all(
            key_name(ledger.signer.key_id) in f["message"] or with_key is False for f in missing
        )
    code, doc = _report(ledger)
    assert {f["stream"] for f in doc["findings"] if f["code"] == "key-missing"} == {"app", "other"}


def _event(i: int, intake: dict[str, str] | None, **details: Any) -> dict[str, Any]:
    if intake is not None:
        details["intake"] = intake
    return small(
        id=f"e-{i}",
        actor={"kind": "system", "name": "auditlock-config-watcher"},
        target={"resource": "configmaps"},
        details=details or None,
    )


def test_each_stream_says_who_observed_its_events(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    clock = SimulatedClock(1_767_225_600_000_000_000)
    writer = led.writer("mixed", clock=clock)
    events = [
        _event(0, {"input": "http", "tag": "http"}),
        # an app claiming to be the config watcher, in a nested object: still the app
        _event(
            1, {"input": "forward", "tag": "app.access"}, x={"intake": {"input": "config_files"}}
        ),
        _event(2, {"input": "config_files", "tag": "config_files.configuration"}),
        _event(3, {"input": "access_proxy", "tag": "access_proxy.access"}),
        _event(
            4,
            {"input": "forward", "tag": "auditlock.operator.access"},
            observed_by="kube-apiserver-audit",
        ),
        _event(5, None),
    ]
    for event in events:
        writer.append(event)
    writer.store(writer.seal())
    writer.store(writer.close())
    code, doc = _report(led)
    assert code == 0, doc["findings"]
    (stream,) = doc["streams"]
    assert stream["observers"] == {
        "app": 2,
        "config-watcher": 1,
        "access-proxy": 1,
        "api-server": 1,
        "unmarked": 1,
    }
    code, out = led.verify()
    assert "observed by: 1 access-proxy, 1 api-server, 2 app, 1 config-watcher, 1 unmarked" in out
