"""Tamper detection: each attack makes `auditlock verify` exit 1 and name the place.

The ledger: stream "app" (60 events in segments of 10, a two-hour quiet period with only
heartbeats in the middle, then closed) and stream "other" (for splicing).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from auditlock.ledger.checkpoint import decode_checkpoint
from auditlock.ledger.keys import public_pem
from auditlock.ledger.names import key_name

from .ledger_helpers import (
    Ledger,
    gzip_bytes,
    join_lines,
    lines_of,
    make_signer,
    new_ledger,
    write_stream,
)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = new_ledger(tmp_path)
    write_stream(led, "app", events=60, per_segment=10, quiet_minutes=120)
    write_stream(led, "other", events=30, per_segment=10)
    return led


def _segment(ledger: Ledger, index: int) -> str:
    return ledger.segments("app")[index]


def test_untouched_ledger_verifies(ledger: Ledger) -> None:
    code, out = ledger.verify()
    assert code == 0, out
    assert out.startswith("PASS")
    assert "90 events" in out
    assert "2 closed, 0 open" in out


def test_altered_byte_in_an_event(ledger: Ledger) -> None:
    name = _segment(ledger, 2)  # seqs 20..29
    lines = lines_of(ledger.read(name))
    lines[4] = (
        lines[4]
        .replace(b'"outcome":"success"', b'"outcome":"failure"', 1)
        .replace(b'"outcome":"failure"', b'"outcome":"fAilure"', 1)
    )
    ledger.write(name, join_lines(lines))
    code, out = ledger.verify()
    assert code == 1
    assert "stream app epoch 0 seq 24-25" in out and "chain-broken" in out


def test_altered_byte_in_the_last_event_is_caught_by_the_merkle_root(ledger: Ledger) -> None:
    name = _segment(ledger, -1)
    lines = lines_of(ledger.read(name))
    lines[-1] = lines[-1].replace(b'"kind":"user"', b'"kind":"usEr"')
    ledger.write(name, join_lines(lines))
    code, out = ledger.verify()
    assert code == 1
    assert "root-mismatch" in out and "stream app epoch 0 seq 50-59" in out


def test_deleted_event(ledger: Ledger) -> None:
    name = _segment(ledger, 1)
    lines = lines_of(ledger.read(name))
    del lines[3]
    ledger.write(name, join_lines(lines))
    code, out = ledger.verify()
    assert code == 1
    assert "segment-length" in out and name in out
    assert "stream app epoch 0 seq 13" in out and "seq-mismatch" in out


def test_two_events_swapped(ledger: Ledger) -> None:
    name = _segment(ledger, 3)
    lines = lines_of(ledger.read(name))
    lines[5], lines[6] = lines[6], lines[5]
    ledger.write(name, join_lines(lines))
    code, out = ledger.verify()
    assert code == 1
    assert "stream app epoch 0 seq 35: found seq 36 where 35 belongs" in out


def test_deleted_segment(ledger: Ledger) -> None:
    ledger.delete(_segment(ledger, 2))
    code, out = ledger.verify()
    assert code == 1
    assert "stream app epoch 0 seq 20-29: no segment holds these events" in out


def test_duplicated_segment(ledger: Ledger) -> None:
    name = _segment(ledger, 1)
    ledger.write(name + ".gz", gzip_bytes(ledger.read(name)))
    code, out = ledger.verify()
    assert code == 1
    assert "segment-overlap" in out and name + ".gz" in out


def test_replaced_checkpoint(ledger: Ledger) -> None:
    name = ledger.checkpoints("app")[3]
    body, signature, _ = ledger.read(name).split(b"\n")
    forged = json.loads(body)
    forged["time"] = forged["time"].replace("2026-01-01", "2026-01-02")
    new_body = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    ledger.write(name, new_body + b"\n" + signature + b"\n")
    code, out = ledger.verify()
    assert code == 1
    assert f"stream app epoch 0 ({name}): signature does not verify" in out
    assert "checkpoint-chain-broken" in out  # the next checkpoint committed to the original


def test_tail_truncated(ledger: Ledger) -> None:
    for name in ledger.segments("app")[-2:] + ledger.checkpoints("app")[-3:]:
        ledger.delete(name)
    code, out = ledger.verify()
    assert code == 1
    assert "stream app epoch 0 seq 40: stream is open and its last checkpoint" in out
    assert "stream-stale" in out


def test_checkpoint_signed_by_an_unknown_key(ledger: Ledger, tmp_path: Path) -> None:
    mallory = make_signer()
    ledger.write(key_name(mallory.key_id), public_pem(mallory.public))
    name = ledger.checkpoints("app")[-1]
    checkpoint = decode_checkpoint(ledger.read(name)).checkpoint
    forged = json.loads(checkpoint.body())
    forged["key_id"] = mallory.key_id
    body = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    ledger.write(name, body + b"\n" + base64.b64encode(mallory.sign(body)) + b"\n")
    for with_key in (True, False):  # anchored, and anchored to the stream's first key
        code, out = ledger.verify(key=with_key)
        assert code == 1
        assert f"stream app epoch 0 ({name}): signed by key {mallory.key_id[:16]}" in out


def test_rollback_to_an_older_checkpoint(ledger: Ledger) -> None:
    checkpoints = ledger.checkpoints("app")
    ledger.write(checkpoints[-1], ledger.read(checkpoints[-4]))
    code, out = ledger.verify()
    assert code == 1
    assert "checkpoint-misplaced" in out and checkpoints[-1] in out


def test_rollback_by_deleting_everything_after_an_older_checkpoint(ledger: Ledger) -> None:
    checkpoints = ledger.checkpoints("app")
    keep = decode_checkpoint(ledger.read(checkpoints[2])).checkpoint.tree_size
    for name in checkpoints[3:]:
        ledger.delete(name)
    for name in ledger.segments("app"):
        if int(name.rsplit("-", 2)[1]) >= keep:
            ledger.delete(name)
    code, out = ledger.verify()
    assert code == 1 and "stream-stale" in out


def test_events_spliced_in_from_another_stream(ledger: Ledger) -> None:
    ours = _segment(ledger, 1)
    theirs = ledger.segments("other")[1]
    lines = lines_of(ledger.read(ours))
    lines[2] = lines_of(ledger.read(theirs))[2]
    ledger.write(ours, join_lines(lines))
    code, out = ledger.verify()
    assert code == 1
    assert "stream app epoch 0 seq 12: line belongs to stream 'other'" in out


def test_whole_segment_from_another_stream(ledger: Ledger) -> None:
    ours = _segment(ledger, 1)
    ledger.write(ours, ledger.read(ledger.segments("other")[1]))
    code, out = ledger.verify()
    assert code == 1 and "foreign-event" in out


def test_quiet_hour_deleted(ledger: Ledger) -> None:
    checkpoints = ledger.checkpoints("app")
    heartbeats = [
        n for n in checkpoints if decode_checkpoint(ledger.read(n)).checkpoint.kind == "heartbeat"
    ]
    assert len(heartbeats) >= 100
    for name in heartbeats[30:90]:  # one hour of heartbeats
        ledger.delete(name)
    code, out = ledger.verify()
    assert code == 1
    assert "time-gap" in out and "no checkpoint from" in out
    assert "checkpoint-missing" in out
