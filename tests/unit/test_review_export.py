"""`auditlock export` writes Hive-partitioned files that DuckDB reads back as they are,
and `--format ocsf` maps each category to its OCSF class (issue 16 points 2 and 4)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from auditlock.ledger.synth import SimulatedClock
from auditlock.ledger.writer import StreamWriter
from auditlock.review.ocsf import OCSF_VERSION, ocsf_class
from tests.helpers.cli import cli

from .ledger_helpers import Ledger, new_ledger, write_stream

DAY_NS = 86_400 * 1_000_000_000


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    monkeypatch.setenv("AUDITLOCK_CACHE_DIR", str(tmp_path / "cache"))
    led = new_ledger(tmp_path)
    write_stream(led, "app", events=40, per_segment=10)
    # A second stream on the next day: two dates, two streams.
    write_stream(
        led, "other", events=20, per_segment=10, start_ns=1_767_225_600_000_000_000 + DAY_NS
    )
    return led


def _export(ledger: Ledger, fmt: str, out: Path, *extra: str) -> dict[str, object]:
    code, stdout, err = cli("export", ledger.url, "--public-key", str(ledger.pub_path),
                            "--format", fmt, "--out", str(out), "--json", *extra)  # fmt: skip
    assert code == 0, err
    doc: dict[str, object] = json.loads(stdout)
    return doc


@pytest.mark.parametrize(("fmt", "reader"), [
    ("parquet", "read_parquet('{out}/**/*.parquet', hive_partitioning = true)"),
    ("jsonl", "read_json('{out}/**/*.json', hive_partitioning = true)"),
    ("ocsf", "read_json('{out}/**/*.ocsf.jsonl', hive_partitioning = true)"),
])  # fmt: skip
def test_duckdb_reads_the_export_back_by_partition(
    ledger: Ledger, tmp_path: Path, fmt: str, reader: str
) -> None:
    out = tmp_path / f"export-{fmt}"
    doc = _export(ledger, fmt, out)
    expected = {"date=2026-01-01/stream=app": 40, "date=2026-01-02/stream=other": 20}
    assert doc["partitions"] == expected and doc["events"] == 60
    counted = duckdb.sql(
        f"SELECT date, stream, count(*) FROM {reader.format(out=out)} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert {f"date={d}/stream={s}": n for d, s, n in counted} == expected
    assert sorted(p.relative_to(out).parts[:2] for p in out.rglob("part-*")) == [
        ("date=2026-01-01", "stream=app"), ("date=2026-01-02", "stream=other"),
    ]  # fmt: skip
    # Not empty: refused rather than mixed with the previous export.
    code, _, err = cli("export", ledger.url, "--format", fmt, "--out", str(out))
    assert code == 2 and "not an empty directory" in err


def test_filters_narrow_the_export(ledger: Ledger, tmp_path: Path) -> None:
    doc = _export(ledger, "parquet", tmp_path / "x", "--stream", "other", "--outcome", "failure")
    rows = duckdb.sql(
        f"SELECT stream, outcome FROM read_parquet('{tmp_path}/x/**/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()
    assert rows and set(rows) == {("other", "failure")} and doc["events"] == len(rows)


def test_each_category_becomes_its_ocsf_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDITLOCK_CACHE_DIR", str(tmp_path / "cache"))
    led = new_ledger(tmp_path)
    writer = StreamWriter.resume(led.dest, "k", led.signer, retention=None,
                                 clock=SimulatedClock(1_767_225_600_000_000_000))  # fmt: skip
    base = {
        "time": "2026-01-01T00:00:01.000000000Z",
        "outcome": "success",
        "actor": {"kind": "user", "name": "admin", "ip": "10.0.0.1"},
        "source": {"pod": "p"},
    }
    cases = [
        ("access", "get", {"resource": "secrets", "namespace": "shop", "name": "db"}, 6003, 2),
        ("access", "exec", {"resource": "pods/exec", "name": "web-1"}, 6003, 99),
        ("authorization", "create", {"resource": "rolebindings", "name": "viewers"}, 3005, 1),
        ("authorization", "delete", {"resource": "clusterrolebindings", "name": "x"}, 3005, 2),
        ("authorization", "create", {"resource": "serviceaccounts/token", "name": "ci"}, 3003, 1),
        ("data", "delete", {"resource": "orders", "name": "order-42"}, 6005, 7),
        ("configuration", "patch", {"resource": "configmaps", "name": "settings"}, 3004, 3),
        ("configuration", "config.file.modified", {"resource": "file", "name": "/etc/app/a.yaml"},
         1001, 3),
        ("alert", "spool.loss", {"resource": "spool"}, 2004, 1),
    ]  # fmt: skip
    for i, (category, action, target, _, _) in enumerate(cases):
        grant = {
            "subjects": [{"kind": "User", "name": "mallory"}],
            "roleRef": {"kind": "ClusterRole", "name": "view"},
        }
        details = grant if i == 2 else None
        event = {**base, "id": f"e-{i}", "category": category, "action": action, "target": target,
                 "correlation": {"request_id": f"req-{i}"}}  # fmt: skip
        if details:
            event["details"] = details
        writer.append(event)
    writer.store(writer.seal())
    writer.store(writer.close())
    code, out, err = cli("query", led.url, "--format", "ocsf")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["class_uid"], e["activity_id"]) for e in events] == [c[3:] for c in cases]
    for event, (category, action, target, class_uid, activity) in zip(events, cases, strict=True):
        # Base event: what OCSF requires of every class.
        assert {"category_uid", "class_uid", "activity_id", "type_uid", "severity_id", "time",
                "metadata"} <= set(event)  # fmt: skip
        assert event["type_uid"] == class_uid * 100 + activity
        assert event["category_uid"] == class_uid // 1000
        assert event["metadata"]["version"] == OCSF_VERSION
        assert event["metadata"]["product"]["name"] == "auditlock"
        assert event["time"] == 1_767_225_601_000
        assert json.loads(event["raw_data"])["action"] == action
        required = {6003: {"actor", "api", "src_endpoint"}, 6005: {"actor", "src_endpoint"},
                    3005: {"user", "privileges"}, 3003: {"user"}, 3004: {"entity"},
                    1001: {"actor", "file"}, 2004: {"finding_info"}}[class_uid]  # fmt: skip
        assert required <= set(event), (category, set(event))
        assert ocsf_class(category, target["resource"], None).uid == class_uid
    grant = events[2]
    assert grant["user"] == {"name": "mallory", "type": "User"}
    assert grant["privileges"] == ["view"]
    assert Counter(e["status"] for e in events) == {"Success": len(cases)}


def test_partitions_are_utc_dates_in_any_time_zone_and_workers_write_every_row(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The date of a partition is the event's UTC date even when DuckDB's session runs in
    another time zone (`time` is a TIMESTAMPTZ, which it would format in New York time:
    "other"'s midnight-UTC events would fall on January 1st); partitions written side by
    side by several cursors hold every row once."""
    from auditlock.ledger.keys import load_public_key
    from auditlock.review import LoadOptions, load
    from auditlock.review.engine import Engine
    from auditlock.review.export import export

    options = LoadOptions(public_keys=[load_public_key(ledger.pub_path)], use_cache=False)
    trail = load(ledger.url, options)
    out = tmp_path / "export"
    try:
        with Engine([trail]) as engine:
            engine.con.execute("SET TimeZone = 'America/New_York'")
            counts = export(engine.con, out, "parquet", "test", workers=2)
    finally:
        trail.close()
    expected = {"date=2026-01-01/stream=app": 40, "date=2026-01-02/stream=other": 20}
    assert counts == expected
    rows = duckdb.sql(
        f"SELECT date, stream, seq FROM read_parquet('{out}/**/*.parquet', "
        "hive_partitioning = true) ORDER BY ALL"
    ).fetchall()
    assert Counter(f"date={d}/stream={s}" for d, s, _ in rows) == expected
    assert len(set(rows)) == 60
