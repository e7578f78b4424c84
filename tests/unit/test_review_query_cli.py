"""`auditlock query`: filters, --sql, the output formats, and the verdict and exclusions
beside the answers (issue 16 points 1 and 2; docs/review.md)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from auditlock.ledger.synth import synthetic_events
from tests.helpers.cli import cli

from .ledger_helpers import Ledger, app_and_other, join_lines, lines_of


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    monkeypatch.setenv("AUDITLOCK_CACHE_DIR", str(tmp_path / "cache"))
    return app_and_other(tmp_path)


def _events() -> list[dict[str, object]]:
    return [e for s, n in (("app", 60), ("other", 30)) for _, e in synthetic_events(s, n)]


def _query(ledger: Ledger, *args: str) -> tuple[int, str, str]:
    return cli("query", ledger.url, "--public-key", str(ledger.pub_path), *args)


def test_filters_select_the_matching_verified_events(ledger: Ledger) -> None:
    code, out, err = _query(ledger, "--format", "jsonl", "--category", "data", "--outcome",
                            "success", "--stream", "ap*")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    expected = [e["id"] for e in _events()[:60]
                if e["category"] == "data" and e["outcome"] == "success"]  # fmt: skip
    assert [r["id"] for r in rows] == expected and expected
    assert rows[0]["time"].endswith("Z") and len(rows[0]["time"]) == 30
    assert "PASS" in err and "90 events accepted" in err
    request = rows[0]["request_id"]
    code, out, _ = _query(ledger, "--format", "jsonl", "--request-id", request)
    assert [json.loads(line)["id"] for line in out.splitlines()] == [rows[0]["id"]]
    code, out, _ = _query(ledger, "--format", "jsonl", "--since", "2026-01-01T00:00:10Z",
                          "--until", "2026-01-01T00:00:20Z", "--stream", "other")  # fmt: skip
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(10, 20))


def test_sql_csv_and_parquet_answer_the_same(ledger: Ledger, tmp_path: Path) -> None:
    sql = "SELECT category, count(*) AS n FROM events GROUP BY category ORDER BY category"
    code, out, err = _query(ledger, "--sql", sql, "--format", "csv")
    assert code == 0, err
    counted = {r["category"]: int(r["n"]) for r in csv.DictReader(io.StringIO(out))}
    assert counted == dict(Counter(str(e["category"]) for e in _events()))
    target = tmp_path / "out.parquet"
    code, _, err = _query(ledger, "--format", "parquet", "--out", str(target))
    assert code == 0, err
    assert duckdb.sql(f"SELECT count(*) FROM '{target}'").fetchall() == [(90,)]
    code, out, err = _query(ledger, "--sql", "SELECT nonsense FROM events")
    assert code == 2 and "--sql" in err


def test_table_fits_the_terminal(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = _query(ledger, "--limit", "5")
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].split()[:3] == ["time", "stream", "category"]
    assert lines[-1] == "(90 rows, first 5 shown; --limit N)"


def test_findings_exit_1_and_the_excluded_events_are_named(ledger: Ledger) -> None:
    name = sorted(ledger.segments("other"))[1]
    lines = lines_of(ledger.read(name))
    ledger.write(name, join_lines(lines[:5] + lines[6:]))  # one event deleted
    code, out, err = _query(ledger, "--json", "--sql", "SELECT count(*) AS n FROM events")
    assert code == 1
    doc = json.loads(out)
    assert doc["result"] == "FAIL" and doc["rows"] == [{"n": 80}]
    (trail,) = doc["trails"]
    (stream,) = trail["excluded"]["streams"]
    assert stream["stream"] == "other" and stream["excluded"] == 10
    assert any(r["kind"] == "finding" for r in stream["reasons"])
    code, out, err = _query(ledger, "--limit", "0")
    assert code == 1 and "excluded: 10 stored events" in err and "stream other" in err


def test_times_are_utc_on_a_machine_in_another_time_zone(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`time` is a TIMESTAMPTZ; DuckDB formats those in its session's time zone, which is
    the machine's (here: connections start in New York time, as with TZ=America/New_York).
    Answers say UTC (`Z`), so the engine's session runs in UTC."""
    connect = duckdb.connect

    def connect_in_new_york(*args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        con = connect(*args, **kwargs)  # type: ignore[arg-type]
        con.execute("SET TimeZone = 'America/New_York'")
        return con

    monkeypatch.setattr(duckdb, "connect", connect_in_new_york)
    sql = "SELECT min(time) AS t, min(time_ns) AS n, strftime(min(time), '%H') AS h FROM events"
    code, out, err = _query(ledger, "--sql", sql, "--format", "csv")
    assert code == 0, err
    (row,) = list(csv.DictReader(io.StringIO(out)))
    monkeypatch.undo()
    utc = duckdb.sql(f"SELECT make_timestamp_ns({row['n']})").fetchall()[0][0]
    assert row["t"] == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ") and row["h"] == f"{utc.hour:02d}"


@pytest.mark.parametrize("format", ["table", "jsonl"])
def test_trace_writes_its_answer_to_out_in_every_format(
    ledger: Ledger, tmp_path: Path, format: str
) -> None:
    event = _events()[0]
    request = event["correlation"]["request_id"]  # type: ignore[index]
    target = tmp_path / f"trace.{format}"
    key = str(ledger.pub_path)
    code, out, err = cli("trace", request, ledger.url, "--public-key", key, "--format", format,
                         "--out", str(target))  # fmt: skip
    assert code == 0, err
    assert out == "" and "PASS" in err
    written = target.read_text()
    if format == "table":  # the table shows no ids; its footer counts the matches
        assert written.endswith(f"(1 events share {request})\n") and "patch" in written
    else:
        assert [json.loads(line)["id"] for line in written.splitlines()] == [event["id"]]
