"""The review loader answers only from events verification accepted, says what it left
out and why, and caches a verified trail by checkpoint without trusting a cache others
could write (issue 16 points 1 and 2; docs/review.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.keys import load_public_key
from auditlock.ledger.observer import observer_of_details
from auditlock.ledger.synth import synthetic_events
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.review import LoadOptions, load
from auditlock.review.schema import COLUMN_NAMES, row_sql

from .ledger_helpers import Ledger, app_and_other, join_lines, lines_of, new_ledger, write_stream


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return app_and_other(tmp_path)


def _options(ledger: Ledger, cache: Path | None, **kw: Any) -> LoadOptions:
    key = load_public_key(ledger.pub_path)
    return LoadOptions(public_keys=[key], cache_root=cache, use_cache=cache is not None, **kw)


def _rows(trail: Any, where: str = "TRUE") -> list[tuple[Any, ...]]:
    files = [str(f) for f in trail.files]
    if not files:
        return []
    return duckdb.sql(
        f"SELECT stream, seq, id, event_json FROM read_parquet({files}) WHERE {where} "
        "ORDER BY stream, seq"
    ).fetchall()


def test_every_accepted_event_is_one_row_with_its_stored_bytes(ledger: Ledger) -> None:
    trail = load(ledger.url, _options(ledger, None))
    try:
        assert trail.passed and trail.events == 90
        assert trail.excluded == {"events": 0, "streams": [], "trail_findings": []}
        rows = _rows(trail)
        expected = [("app", i, e["id"]) for i, (_, e) in enumerate(synthetic_events("app", 60))] + [
            ("other", i, e["id"]) for i, (_, e) in enumerate(synthetic_events("other", 30))
        ]
        assert [r[:3] for r in rows] == expected
        stored = b"".join(ledger.read(n) for n in sorted(ledger.segments("app")))
        events = [line[line.index(b'"event":') + 8 : line.rindex(b',"prev":"')]
                  for line in lines_of(stored)]  # fmt: skip
        assert [r[3].encode() for r in rows if r[0] == "app"] == events
        columns = duckdb.sql(f"SELECT * FROM read_parquet('{trail.files[0]}') LIMIT 0").columns
        assert tuple(columns) == COLUMN_NAMES
    finally:
        trail.close()


def test_the_hook_hands_over_exactly_what_verify_counts(ledger: Ledger) -> None:
    seen: list[tuple[str, int, int, int]] = []
    report = verify(
        ledger.dest,
        VerifyOptions(on_accepted=lambda s, e, f, lines: seen.append((s, e, f, len(lines)))),
    )
    assert sum(n for *_, n in seen) == report.events_verified == 90
    for stream in ("app", "other"):
        runs = [(first, n) for s, _, first, n in seen if s == stream]
        starts = [sum(n for _, n in runs[:i]) for i in range(len(runs))]
        assert [first for first, _ in runs] == starts


def test_an_altered_event_excludes_its_interval_and_says_why(ledger: Ledger) -> None:
    name = sorted(ledger.segments("app"))[2]  # seqs 20-29
    lines = lines_of(ledger.read(name))
    lines[4] = (
        lines[4]
        .replace(b'"outcome":"success"', b'"outcome":"failure"')
        .replace(b'"outcome":"failure"', b'"outcome":"unknown"')
    )
    ledger.write(name, join_lines(lines))
    trail = load(ledger.url, _options(ledger, None))
    try:
        assert not trail.passed
        assert trail.events == 80
        assert {r[1] for r in _rows(trail, "stream = 'app'")} == set(range(60)) - set(range(20, 30))
        (stream,) = trail.excluded["streams"]
        assert (stream["stream"], stream["stored"], stream["accepted"], stream["excluded"]) == (
            "app", 60, 50, 10,
        )  # fmt: skip
        codes = {r["code"] for r in stream["reasons"]}
        assert codes & {"chain-broken", "root-mismatch", "line-not-canonical"}, stream
        assert trail.excluded["events"] == 10
    finally:
        trail.close()


def test_a_second_load_comes_from_the_cache_until_the_trail_changes(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load(ledger.url, _options(ledger, cache))
    assert not first.from_cache and first.events == 90

    import auditlock.ledger.verify as verify_module

    def no_verify(*_: Any, **__: Any) -> Any:
        raise AssertionError("verified again")

    monkeypatch.setattr(verify_module, "verify", no_verify)
    again = load(ledger.url, _options(ledger, cache))
    assert again.from_cache and again.events == 90 and again.files == first.files
    monkeypatch.undo()

    # Deleting a segment changes the listing: the trail is verified again, and its events
    # are excluded with the reason.
    ledger.delete(sorted(ledger.segments("other"))[1])
    changed = load(ledger.url, _options(ledger, cache))
    assert not changed.from_cache and changed.events == 80
    assert {r["code"] for r in changed.excluded["streams"][0]["reasons"]} >= {"events-missing"}
    # The superseded entry of the same trail and trust is gone.
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [
        changed.files[0].parent.name
    ]


def test_an_edit_in_place_is_answered_from_the_cache_until_no_cache(
    ledger: Ledger, tmp_path: Path
) -> None:
    """What docs/review.md says: the cache holds the answer of the verification it names;
    an edit that changes neither a name nor a newest checkpoint is found by --no-cache
    (on a WORM store such an edit is refused by the store)."""
    cache = tmp_path / "cache"
    load(ledger.url, _options(ledger, cache))
    name = sorted(ledger.segments("app"))[0]
    ledger.write(name, ledger.read(name).replace(b'"action":"', b'"action":"x', 1))
    cached = load(ledger.url, _options(ledger, cache))
    assert cached.from_cache and cached.passed
    fresh = load(ledger.url, _options(ledger, None))
    try:
        assert not fresh.passed and fresh.events == 80
    finally:
        fresh.close()


def test_a_cache_others_can_write_or_inside_the_trail_is_not_used(
    ledger: Ledger, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    trail = load(ledger.url, _options(ledger, shared))
    try:
        assert "can be written by others" in trail.cache_note
        assert trail.events == 90 and not list(shared.iterdir())
    finally:
        trail.close()
    inside = load(ledger.url, _options(ledger, ledger.root / "cache"))
    try:
        assert "inside the trail" in inside.cache_note
    finally:
        inside.close()


def _line(event: dict[str, Any], seq: int) -> str:
    body = canonical_bytes(event).decode()
    return f'{{"epoch":0,"event":{body},"prev":"{"0" * 64}","seq":{seq},"stream":"s-1"}}'


@pytest.mark.parametrize(
    "details",
    [
        None,
        {"intake": {"input": "http", "tag": "http"}},
        {"intake": {"input": "forward", "tag": "app.x"},
         "x": {"intake": {"input": "config_files"}}},
        {"intake": {"input": "config_files", "tag": "config_files.configuration"}},
        {"intake": {"input": "access_proxy", "tag": "access_proxy.access"}},
        {"intake": {"input": "forward", "tag": "auditlock.operator.access"},
         "observed_by": "kube-apiserver-audit"},
        {"intake": {"input": "http", "tag": "auditlock.operator.x"}, "observed_by": "watch"},
        {"intake": {"input": "http", "tag": "auditlock.operator.x"}, "observed_by": "someone"},
        {"intake": {"input": "http", "tag": "auditlock.operator.x"}, "observed_by": 3},
        {"intake": {"input": 7}},
        {"intake": "http"},
        {"intake": {"input": "other"}},
    ],
)  # fmt: skip
def test_the_table_says_who_observed_an_event_as_verify_does(
    details: dict[str, Any] | None,
) -> None:
    event: dict[str, Any] = {
        "id": "k8s-audit-1f2e", "time": "2026-01-01T00:00:01.123456789Z", "category": "access",
        "action": "get", "outcome": "success", "actor": {"kind": "user", "name": "é\"x"},
        "target": {"resource": "secrets"}, "source": {"pod": "p"},
        "correlation": {"request_id": "1f2e"},
    }  # fmt: skip
    if details is not None:
        event["details"] = details
    con = duckdb.connect()
    con.execute("CREATE TABLE lines (line VARCHAR)")
    con.execute("INSERT INTO lines VALUES (?)", [_line(event, 12345)])
    (row,) = con.execute(
        f"SELECT observer, audit_id, event_json, time_ns, seq, details FROM ({row_sql('lines')})"
    ).fetchall()
    assert row[0] == observer_of_details(details)
    assert row[1] == ("1f2e" if row[0] == "api-server" else None)
    assert row[2].encode() == canonical_bytes(event)
    assert (row[3], row[4]) == (1_767_225_601_123_456_789, 12345)
    assert (orjson.loads(row[5]) if row[5] is not None else None) == details


def test_a_copied_segment_under_an_overlapping_name_gives_each_event_once(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    writer = led.writer("dup")
    for _, event in synthetic_events("dup", 30):
        writer.append(event)
        if writer.pending_events >= 10:
            writer.store(writer.seal())
    writer.store(writer.close())
    # Lines 5-29 again, under a name sorting between segments 10-19 and 20-29: verify
    # resynchronises at checkpoint 10's head inside the copy and vouches for 10-29 a
    # second time (the copy's root matches: its lines are authentic).
    lines = [line for n in sorted(led.segments("dup")) for line in lines_of(led.read(n))]
    led.write("streams/dup/000000/seg-000000000015-000000000039.jsonl", join_lines(lines[5:30]))
    seen: list[tuple[int, int]] = []
    verify(led.dest, VerifyOptions(on_accepted=lambda s, e, f, lines: seen.append((f, len(lines)))))
    assert sum(n for _, n in seen) > 30  # the same positions handed over twice
    trail = load(led.url, _options(led, None))
    try:
        seqs = [r[1] for r in _rows(trail)]
        assert len(seqs) == len(set(seqs)) and not trail.passed
    finally:
        trail.close()


def test_small_batches_make_many_parts_with_the_same_rows(ledger: Ledger) -> None:
    whole = load(ledger.url, _options(ledger, None))
    parts = load(ledger.url, _options(ledger, None, batch_bytes=4000))
    try:
        assert len(whole.files) == 1 and len(parts.files) > 5
        assert _rows(parts) == _rows(whole)
    finally:
        whole.close()
        parts.close()


def test_a_cached_verdict_is_not_reused_once_an_open_stream_is_overdue(tmp_path: Path) -> None:
    """An open stream whose next heartbeat is overdue is `stream-stale` when verified
    now: a cache entry from before must not answer for it."""
    led = new_ledger(tmp_path)
    write_stream(led, "open", events=20, per_segment=10, close=False)  # written in January
    cache = tmp_path / "cache"
    first = load(led.url, _options(led, cache))
    assert {f["code"] for f in first.report["findings"]} == {"stream-stale"}
    again = load(led.url, _options(led, cache))
    assert not again.from_cache and "heartbeat is overdue" in again.cache_note
    assert [f["code"] for f in again.report["findings"]] == ["stream-stale"]


def test_a_cache_part_changed_after_it_was_written_is_not_used(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A Parquet part rewritten in the cache (here: every action renamed) no longer
    matches what the entry recorded of it: the trail is verified again, not answered
    from the altered part."""
    cache = tmp_path / "cache"
    first = load(ledger.url, _options(ledger, cache))
    part = first.files[0]
    forged = tmp_path / "forged.parquet"
    duckdb.sql(
        f"COPY (SELECT * REPLACE ('forged' AS action) FROM read_parquet('{part}')) "
        f"TO '{forged}' (FORMAT parquet)"
    )
    os.replace(forged, part)
    again = load(ledger.url, _options(ledger, cache))
    assert not again.from_cache and again.events == 90
    assert not any(action == "forged" for (action,) in duckdb.sql(
        f"SELECT action FROM read_parquet({[str(f) for f in again.files]})"
    ).fetchall())  # fmt: skip
    # The entry written by that verification is used again.
    assert load(ledger.url, _options(ledger, cache)).from_cache


def test_the_cache_key_follows_each_epochs_newest_valid_checkpoint(ledger: Ledger) -> None:
    """The key reads the newest checkpoint of each epoch (the one that commits to all
    before it), found from the end of the sorted listing; a stray name that sorts after
    it is not taken for it, and rewriting the newest one changes the key."""
    from auditlock import sinks
    from auditlock.review.cache import trail_state

    keys = [load_public_key(ledger.pub_path)]
    newest = {stream: ledger.checkpoints(stream)[-1] for stream in ("app", "other")}
    stray = newest["app"].rpartition("/")[0] + "/ckpt-9.ckpt"
    ledger.write(stray, b"not a checkpoint")
    state = trail_state(sinks.open(ledger.url), keys)
    assert [(s, e, n) for s, e, n, _ in state.newest] == [
        ("app", 0, newest["app"]), ("other", 0, newest["other"]),
    ]  # fmt: skip
    ledger.write(newest["other"], ledger.read(newest["other"]).replace(b'"epoch"', b' "epoch"'))
    assert trail_state(sinks.open(ledger.url), keys).key != state.key
