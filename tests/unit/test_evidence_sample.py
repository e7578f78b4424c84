"""The evidence sample's key: one definition in Python, one in DuckDB, one with coreutils
(what docs/review.md tells an auditor to run), and they agree."""

from __future__ import annotations

import subprocess

import pytest

from auditlock.evidence.sample import sample_key, sample_key_sql

CASES = [
    ("Q3-2026", "rig_shop_orders-0", 0, 0),
    ("seed with 'quotes' and ünïcode ✓", "operator", 3, 123456789),
    ("", "a", 999999, 999999999999),
]


@pytest.mark.parametrize(("seed", "stream", "epoch", "seq"), CASES)
def test_the_documented_shell_command_gives_the_same_key(
    seed: str, stream: str, epoch: int, seq: int
) -> None:
    shell = subprocess.run(
        ["bash", "-c", 'printf "auditlock-sample/v1\\n%s\\n%s\\n%d\\n%d" "$1" "$2" "$3" "$4" '
         "| sha256sum", "-", seed, stream, str(epoch), str(seq)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shell.stdout.split()[0] == sample_key(seed, stream, epoch, seq)


def test_duckdb_draws_with_the_same_key() -> None:
    import duckdb

    from auditlock.review.schema import sql_string

    con = duckdb.connect()
    for seed, stream, epoch, seq in CASES:
        (key,) = con.execute(
            f"SELECT {sample_key_sql(sql_string(seed))} FROM "
            "(SELECT ? AS stream, CAST(? AS BIGINT) AS epoch, CAST(? AS BIGINT) AS seq)",
            [stream, epoch, seq],
        ).fetchall()[0]
        assert key == sample_key(seed, stream, epoch, seq)


def test_another_seed_gives_an_independent_order() -> None:
    population = [("s", 0, i) for i in range(200)]
    first = sorted(population, key=lambda p: sample_key("a", *p))[:20]
    second = sorted(population, key=lambda p: sample_key("b", *p))[:20]
    assert first == sorted(population, key=lambda p: sample_key("a", *p))[:20]
    assert len(set(first) & set(second)) < 10
