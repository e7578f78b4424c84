"""`verify --witness-key`: the operator's witness records against the store they describe
(docs/FORMAT.md section 16; issue 17 point 3). A stream deleted or rolled back after it
was witnessed, and a copy of the bucket that differs from what was witnessed, are each
reported although the store is consistent in itself; hostile records never crash."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlock import sinks
from auditlock.ledger.errors import FormatError, SignatureError
from auditlock.ledger.keys import Signer, public_pem, verify
from auditlock.ledger.newest import newest_checkpoints
from auditlock.ledger.synth import DEFAULT_START_NS
from auditlock.ledger.witness import (
    ChainEnd,
    Witnessed,
    chain_end,
    decode_record,
    parse_witness_name,
    record_name,
    witnessed,
)
from tests.helpers.spec_witness import spec_witness

from .ledger_helpers import Ledger, app_and_other, make_signer, new_ledger, write_stream

WITNESS = "prod-1"
MINUTE_NS = 60 * 1_000_000_000


@pytest.fixture
def operator_key(tmp_path: Path) -> tuple[Signer, Path]:
    signer = make_signer(7)
    path = tmp_path / "operator.pub"
    path.write_bytes(public_pem(signer.public))
    return signer, path


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return app_and_other(tmp_path, app=(30, 10), other=(12, 6))


def witness_once(
    dest: sinks.Destination,
    signer: Signer,
    *,
    time_ns: int | None = None,
    interval_ms: int = 60_000,
) -> str:
    """One witness cycle, as the operator runs it: read, sign, store."""
    end = chain_end(dest, WITNESS)
    name, data = end.record(
        WITNESS,
        signer,
        witnessed(newest_checkpoints(dest).values()),
        time_ns=time_ns if time_ns is not None else time.time_ns(),
        interval_ms=interval_ms,
    )
    dest.put(name, data, None)
    return name


def report(ledger: Ledger, pub: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out = ledger.verify("--json", "--slack", "600", "--witness-key", str(pub), *extra)
    return code, json.loads(out)


def codes(doc: dict[str, Any]) -> list[str]:
    return [f["code"] for f in doc["findings"]]


def test_an_honest_store_with_its_witness_passes(
    ledger: Ledger, operator_key: tuple[Signer, Path]
) -> None:
    signer, pub = operator_key
    now = time.time_ns()
    for minute in (2, 1, 0):
        witness_once(ledger.dest, signer, time_ns=now - minute * MINUTE_NS)
    code, doc = report(ledger, pub)
    assert (code, doc["findings"]) == (0, [])
    assert doc["witness"] == [
        f"witness {WITNESS}: 3 valid record(s), newest {_time(now)}, "
        "2 witnessed checkpoint(s) compared with the store"
    ]
    # Without the witness key the records are ledger objects, listed, and not checked.
    code, out = ledger.verify("--json", "--slack", "600")
    assert code == 0, out
    assert "witness" not in json.loads(out)


def test_a_stream_deleted_after_it_was_witnessed_is_reported(
    ledger: Ledger, operator_key: tuple[Signer, Path]
) -> None:
    signer, pub = operator_key
    witness_once(ledger.dest, signer)
    shutil.rmtree(ledger.path("streams/other"))
    assert ledger.verify("--slack", "600")[0] == 0  # consistent in itself
    code, doc = report(ledger, pub)
    assert code == 1
    (finding,) = doc["findings"]
    assert finding["code"] == "witness-missing-checkpoint"
    assert finding["stream"] == "other"
    assert "deleted or rolled back after it was witnessed" in finding["message"]


def test_a_stream_rolled_back_after_it_was_witnessed_is_reported(
    ledger: Ledger, operator_key: tuple[Signer, Path]
) -> None:
    signer, pub = operator_key
    witness_once(ledger.dest, signer)
    for name in ledger.checkpoints("app")[-2:]:  # the close and the seal before it
        ledger.delete(name)
    for name in ledger.segments("app")[-1:]:
        ledger.delete(name)
    _, doc = report(ledger, pub)
    assert "witness-missing-checkpoint" in codes(doc)
    (missing,) = [f for f in doc["findings"] if f["code"] == "witness-missing-checkpoint"]
    assert missing["stream"] == "app"


def test_a_copy_that_differs_from_what_was_witnessed_is_a_split_view(
    tmp_path: Path, operator_key: tuple[Signer, Path]
) -> None:
    """The writer's key signs a second history of `app` into another bucket; that copy
    verifies on its own, but not against the witness records copied beside it."""
    signer, pub = operator_key
    seen = new_ledger(tmp_path / "seen", make_signer(3))
    write_stream(seen, "app", events=30, per_segment=10)
    witness_once(seen.dest, signer)
    shown = new_ledger(tmp_path / "shown", make_signer(3))
    # same key, same shape, other events: the same names hold other checkpoints
    write_stream(shown, "app", events=30, per_segment=10, start_ns=DEFAULT_START_NS + 10**9)
    for name in seen.names("witness/"):
        shown.write(name, seen.read(name))
    assert shown.verify("--slack", "600")[0] == 0
    code, doc = report(shown, pub)
    assert (code, codes(doc)) == (1, ["witness-mismatch"])
    assert "split view" in doc["findings"][0]["message"]


def test_no_witness_record_is_a_finding_when_a_witness_key_is_given(
    ledger: Ledger, operator_key: tuple[Signer, Path]
) -> None:
    code, doc = report(ledger, operator_key[1])
    assert (code, codes(doc)) == (1, ["witness-missing"])


def test_deleted_replaced_foreign_and_old_records_are_each_named(
    ledger: Ledger, operator_key: tuple[Signer, Path], tmp_path: Path
) -> None:
    signer, pub = operator_key
    start = time.time_ns() - 10 * MINUTE_NS
    names = [witness_once(ledger.dest, signer, time_ns=start + i * MINUTE_NS) for i in range(5)]
    ledger.delete(names[1])  # a gap
    # Record 3 re-signed with the right key but other content: its successor's prev breaks.
    replaced = decode_record(ledger.read(names[3])).record
    end = ChainEnd(replaced.seq, replaced.prev)
    ledger.write(names[3], end.record(WITNESS, signer, (), time_ns=replaced.time_ns,
                                      interval_ms=60_000)[1])  # fmt: skip
    # Record 2 signed by a key that is not the operator's.
    ledger.write(names[2], ChainEnd(2, bytes(32)).record(
        WITNESS, make_signer(9), (), time_ns=start, interval_ms=60_000)[1])  # fmt: skip
    _, doc = report(ledger, pub, "--slack", "30")
    found = [(f["code"], f["object"]) for f in doc["findings"] if f["code"].startswith("witness")]
    assert ("witness-gap", names[4]) in found
    assert ("witness-signature", names[2]) in found
    assert ("witness-chain-broken", names[4]) in found
    # the newest record is 6 minutes old with a 60 s promise and 30 s slack
    assert ("witness-stale", names[4]) in found
    assert "verify-error" not in codes(doc)


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json\nAAAA\n",
        b"",
        b"x" * (16 * 1024 * 1024 + 1),
        b'{"format":"auditlock/witness/v2"}\n' + b"A" * 86 + b"==\n",
        b"[" * 5000 + b"\n",
    ],
    ids=["not-json", "empty", "huge", "unknown-version", "deep"],
)
def test_a_corrupt_record_is_witness_corrupt_and_the_rest_is_still_checked(
    ledger: Ledger, operator_key: tuple[Signer, Path], damage: bytes
) -> None:
    signer, pub = operator_key
    now = time.time_ns()
    names = [witness_once(ledger.dest, signer, time_ns=now - (2 - i) * MINUTE_NS) for i in range(3)]
    ledger.write(names[1], damage)
    shutil.rmtree(ledger.path("streams/other"))
    code, doc = report(ledger, pub)
    assert code == 1
    assert sorted(codes(doc)) == ["witness-corrupt", "witness-missing-checkpoint"]


def test_witness_names_are_exact() -> None:
    assert parse_witness_name(record_name("c1", 5)) is not None
    parsed = parse_witness_name("witness/c1/000000000005.json.tsr")
    assert parsed is not None and parsed.token and parsed.seq == 5
    for bad in (
        "witness/c1/5.json",
        "witness/c1/000000000005.jsonx",
        "witness/_x/000000000000.json",
        "witness/c1/000000000005.json.tsr.tsr",
    ):
        assert parse_witness_name(bad) is None


@pytest.fixture(scope="module")
def valid_record() -> bytes:
    entries = (Witnessed("s", 0, 3, 7, bytes(range(32))),)
    end = ChainEnd(0, bytes(32))
    return end.record("c", make_signer(1), entries, time_ns=0, interval_ms=1000)[1]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_mutation_of_a_record_is_refused_or_parsed_never_a_crash(
    valid_record: bytes, data: st.DataObject
) -> None:
    body = bytearray(valid_record)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    try:
        signed = decode_record(bytes(body))
    except FormatError:
        return
    if bytes(body) != valid_record:  # parsed, but the operator's signature no longer holds
        with pytest.raises(SignatureError):
            verify(make_signer(1).public, signed.signature, signed.body, "record")


def _time(ns: int) -> str:
    from auditlock.ledger.timestamps import format_ns

    return format_ns(ns)


def test_a_checker_written_from_format_md_alone_agrees(
    ledger: Ledger, operator_key: tuple[Signer, Path], tmp_path: Path
) -> None:
    """FORMAT.md section 16 is enough to check witness records without auditlock
    (tests/helpers/spec_witness.py): it finds what verify finds, once per problem."""
    signer, pub = operator_key
    now = time.time_ns()
    names = [witness_once(ledger.dest, signer, time_ns=now - (3 - i) * MINUTE_NS) for i in range(4)]
    assert spec_witness(ledger.root, signer.public) == []
    shutil.rmtree(ledger.path("streams/other"))
    ledger.delete(names[1])
    ours = spec_witness(ledger.root, signer.public)
    _, doc = report(ledger, pub)
    assert (
        sorted({code for code, _ in ours})
        == sorted(codes(doc))
        == [
            "witness-gap",
            "witness-missing-checkpoint",
        ]
    )


def test_another_clusters_witness_in_a_shared_bucket_is_not_judged(
    ledger: Ledger, operator_key: tuple[Signer, Path]
) -> None:
    """Clusters may share a bucket: records no given key signed are another operator's
    (a warning); if they are all there is, nothing was witnessed for us."""
    signer, pub = operator_key
    other = make_signer(11)
    end = chain_end(ledger.dest, "prod-2")
    name, data = end.record("prod-2", other, (), time_ns=time.time_ns(), interval_ms=60_000)
    ledger.dest.put(name, data, None)
    code, doc = report(ledger, pub)
    assert (code, codes(doc)) == (1, ["witness-missing"])
    assert [w["code"] for w in doc["warnings"]] == ["witness-unknown"]
    witness_once(ledger.dest, signer)
    code, doc = report(ledger, pub)
    assert (code, codes(doc)) == (0, [])
    assert [w["code"] for w in doc["warnings"]] == ["witness-unknown"]
