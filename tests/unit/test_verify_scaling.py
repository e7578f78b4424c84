"""What lets verify take a large trail: ids kept in bounded memory (seen_ids.py), streams
verified in parallel processes (`verify --jobs`), and the accepted events handed to a
reader (`Verification`). Each must leave the verdict exactly as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from auditlock.ledger import seen_ids
from auditlock.ledger.synth import SimulatedClock, synthetic_events
from auditlock.ledger.verify import Verification, VerifyOptions, verify
from tests.helpers.cli import cli

from .ledger_helpers import Ledger, new_ledger

START_NS = 1_767_225_600_000_000_000


def _stream(ledger: Ledger, stream: str, ids: list[str], per_segment: int) -> None:
    """One stream whose events carry `ids` in order, sealed every `per_segment` events."""
    clock = SimulatedClock(START_NS)
    writer = ledger.writer(stream, clock=clock)
    events = [event for _, event in synthetic_events(stream, len(ids))]
    for i, (event, event_id) in enumerate(zip(events, ids, strict=True)):
        writer.append({**event, "id": event_id})
        if (i + 1) % per_segment == 0:
            clock.now += 1_000_000_000
            writer.store(writer.seal())
    writer.store(writer.close())


def _warnings(ledger: Ledger) -> tuple[Any, list[tuple[Any, ...]]]:
    report = verify(ledger.dest, VerifyOptions(now_ns=START_NS, check_retention=False))
    return report, [(w.code, w.stream, w.epoch, w.first_seq, w.object, w.message)
                    for w in report.warnings]  # fmt: skip


def test_repeated_ids_far_apart_are_all_reported_with_ids_spilled_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = new_ledger(tmp_path)
    # 90 events, 6 per segment: ids repeat within a segment, across segments of one run
    # and across runs (with 10 ids in memory, run after run goes to disk).
    ids = [f"id-{i % 37}" if i % 4 else f"id-{i % 11}" for i in range(90)]
    _stream(ledger, "app", ids, per_segment=6)
    report, in_memory = _warnings(ledger)
    assert report.ok and report.events_verified == 90
    assert len(in_memory) == 90 - len(set(ids))

    made: list[str] = []
    real_mkdtemp = seen_ids.tempfile.mkdtemp

    def mkdtemp(**kwargs: Any) -> str:
        made.append(real_mkdtemp(dir=tmp_path, **kwargs))
        return made[-1]

    monkeypatch.setattr(seen_ids, "RUN_IDS", 10)
    monkeypatch.setattr(seen_ids, "MERGE_FAN_IN", 3)  # and runs merged in stages
    monkeypatch.setattr(seen_ids.tempfile, "mkdtemp", mkdtemp)
    report, spilled = _warnings(ledger)
    assert report.ok and report.events_verified == 90
    assert sorted(spilled) == sorted(in_memory)  # the same warnings, each at its line
    assert made and not any(os.path.exists(d) for d in made)  # the runs are removed


def test_jobs_give_the_same_report_as_one_process(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    for n, stream in enumerate(("a", "b", "c")):
        _stream(ledger, stream, [f"{stream}-{i}" for i in range(20 + n)], per_segment=5)
    seg = sorted(ledger.root.glob("streams/b/*/seg-*"))[1]
    seg.write_bytes(seg.read_bytes().replace(b'"action":"', b'"action":"x', 1))
    one = cli("verify", ledger.url, "--json", "--slack", "1e9")
    two = cli("verify", ledger.url, "--json", "--slack", "1e9", "--jobs", "2")
    assert one[0] == two[0] == 1
    assert json.loads(one[1]) == json.loads(two[1])
    assert "chain-broken" in {f["code"] for f in json.loads(two[1])["findings"]}


def test_the_iterator_yields_exactly_the_events_verify_counts(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    _stream(ledger, "a", [f"a-{i}" for i in range(12)], per_segment=4)
    _stream(ledger, "b", [f"b-{i}" for i in range(8)], per_segment=4)
    seg = sorted(ledger.root.glob("streams/a/*/seg-*"))[1]  # seqs 4-7: altered
    seg.write_bytes(seg.read_bytes().replace(b'"action":"', b'"action":"x', 1))
    check = Verification(ledger.dest, VerifyOptions(now_ns=START_NS, check_retention=False))
    seen = [(e.stream, e.seq, e.event["id"]) for e in check]
    assert not check.report.ok
    assert len(seen) == check.report.events_verified == 16
    assert seen == [("a", s, f"a-{s}") for s in (0, 1, 2, 3, 8, 9, 10, 11)] + [
        ("b", s, f"b-{s}") for s in range(8)
    ]
