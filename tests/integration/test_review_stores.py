"""`auditlock query` reads s3:// (SeaweedFS, Object Lock) and gs:// (fake-gcs-server)
trails through verification, then answers the same question again from the cache without
reading a segment (issue 16 points 1 and 2)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from auditlock.ledger.synth import synthetic_events
from tests.helpers.cli import cli
from tests.servers.fakegcs import FakeGCS
from tests.servers.seaweedfs import SeaweedFS


def _query_twice(store: str, keys: Path) -> None:
    written = cli("synth", "--store", store, "--key", str(keys / "signing.key"),
                   "--streams", "2", "--events", "150", "--segment-events", "50",
                   "--retention-days", "1")  # fmt: skip
    assert written[0] == 0, written[2]
    expected = Counter(
        e["category"] for k in range(2) for _, e in synthetic_events(f"synth-0-{k:04d}", 150)
    )
    sql = "SELECT category, count(*) AS n FROM events GROUP BY category ORDER BY category"
    args = ("query", store, "--public-key", str(keys / "signing.pub"), "--sql", sql, "--json")
    code, out, err = cli(*args)
    assert code == 0, out + err
    doc = json.loads(out)
    assert {r["category"]: r["n"] for r in doc["rows"]} == dict(expected)
    (trail,) = doc["trails"]
    assert trail["result"] == "PASS" and trail["events_accepted"] == 300
    assert not trail["from_cache"]
    again = json.loads(cli(*args)[1])
    assert again["trails"][0]["from_cache"] and again["rows"] == doc["rows"]


def _setup(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in (env | {"AUDITLOCK_CACHE_DIR": str(tmp_path / "cache")}).items():
        monkeypatch.setenv(key, value)
    keys = tmp_path / "keys"
    assert cli("keys", "generate", "--out", str(keys))[0] == 0
    return keys


def test_query_an_s3_trail(
    seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = _setup(seaweedfs.env(), tmp_path, monkeypatch)
    _query_twice(f"s3://{seaweedfs.make_bucket()}/orders", keys)


def test_query_a_gcs_trail(
    fake_gcs: FakeGCS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = _setup(fake_gcs.env(), tmp_path, monkeypatch)
    _query_twice(f"gs://{fake_gcs.make_bucket()}/orders", keys)
