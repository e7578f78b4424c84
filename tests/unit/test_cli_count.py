"""`auditlock count`: the stored events by category, and a failing exit when a category
that was sent has none (what the kind quickstart checks after verify)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.writer import StreamWriter
from tests.helpers.cli import cli
from tests.unit.ledger_helpers import Ledger, new_ledger, write_stream


def _heartbeats_only(ledger: Ledger, stream: str) -> None:
    """A stream that verifies but holds no event: the collector ran, nothing arrived."""
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = ledger.writer(stream, clock=clock)
    writer.store(writer.heartbeat())
    clock.now += 60 * 1_000_000_000
    writer.store(writer.heartbeat())
    writer.store(writer.close())


def _expected(stream: str, events: int) -> Counter[str]:
    return Counter(e["category"] for _, e in synthetic_events(stream, events))


def test_counts_every_stored_event_by_category(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    write_stream(ledger, "shop_api-1", events=45, per_segment=10)
    write_stream(ledger, "shop_api-2", events=7, per_segment=3)
    expected = _expected("shop_api-1", 45) + _expected("shop_api-2", 7)
    assert ledger.verify()[0] == 0
    code, out, _ = cli("count", ledger.url, "--json", "--require", "access")
    assert code == 0
    report = json.loads(out)
    assert report["events"] == 52 and report["streams"] == 2 and report["missing"] == []
    assert report["categories"] == {c: expected.get(c, 0) for c in report["categories"]}
    code, out, _ = cli("count", ledger.url)
    assert code == 0 and f"{ledger.url}: 52 events in 2 streams" in out
    assert f"  access         {expected['access']}" in out


def test_a_verified_trail_without_events_fails_the_required_categories(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    _heartbeats_only(ledger, "auditlock-demo_orders-1")
    code, summary = ledger.verify()
    assert code == 0, summary  # verify alone passes: this is what count is for
    code, out, _ = cli("count", ledger.url, "--require", "access", "--require", "data")
    assert code == 1
    assert f"FAIL: no access events are stored under {ledger.url}" in out
    assert f"FAIL: no data events are stored under {ledger.url}" in out
    assert ": 0 events in 0 streams" in out


def test_only_the_missing_category_is_named(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    writer = StreamWriter.resume(
        ledger.dest, "s", ledger.signer, retention=None, clock=SimulatedClock(DEFAULT_START_NS)
    )
    kept = [e for _, e in synthetic_events("s", 40) if e["category"] != "alert"]
    for event in kept:
        writer.append(event)
    writer.store(writer.seal())
    writer.store(writer.close())
    present = sorted({e["category"] for e in kept})
    assert present == ["access", "authorization", "configuration", "data"]
    args = [a for c in present for a in ("--require", c)]
    assert cli("count", ledger.url, *args)[0] == 0
    code, out, _ = cli("count", ledger.url, *args, "--require", "alert")
    assert code == 1 and out.count("FAIL:") == 1 and "no alert events" in out
    assert f"{ledger.url}: {len(kept)} events in 1 streams" in out


def test_an_unreadable_segment_or_store_is_an_error_not_a_count(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    write_stream(ledger, "s", events=20)
    segment = ledger.segments("s")[0]
    ledger.write(segment, ledger.read(segment)[:-5])  # truncated
    code, _, err = cli("count", ledger.url, "--require", "access")
    assert code == 2 and segment in err and "auditlock verify" in err
    code, _, err = cli("count", "nosuch://bucket")
    assert code == 2 and err.startswith("error:")


def test_an_unknown_category_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = cli("count", f"file://{tmp_path}", "--require", "acces")
    assert code == 2 and "invalid choice: 'acces'" in err
