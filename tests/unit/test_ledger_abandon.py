"""Abandoned streams (docs/FORMAT.md, "Abandoned streams"): a stream whose writer died
without closing is closed by an `abandon` checkpoint, after which `verify` passes and
reports it closed-abandoned, while every deletion or addition around it stays a finding.

The ledgers are real (StreamWriter on file://); the "crash" is a writer that is simply
never closed, which is what the store holds after a SIGKILL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditlock.ledger.abandon import abandon_stream
from auditlock.ledger.checkpoint import decode_checkpoint, encode_checkpoint
from auditlock.ledger.newest import newest_checkpoint, newest_checkpoints
from auditlock.ledger.report import VerifyReport
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.writer import StreamWriter

from .ledger_helpers import Ledger, make_signer, new_ledger, write_stream

HOUR_NS = 3600 * 1_000_000_000
LATER = DEFAULT_START_NS + 24 * HOUR_NS  # "now" for verify: a day after the writer died


@pytest.fixture
def crashed(tmp_path: Path) -> Ledger:
    """Stream "app": 30 events in segments of 10, never closed (the writer was killed)."""
    ledger = new_ledger(tmp_path)
    write_stream(ledger, "app", events=30, per_segment=10, close=False)
    return ledger


def _verify(ledger: Ledger, now_ns: int = LATER) -> VerifyReport:
    return verify(ledger.dest, VerifyOptions(public_keys=[ledger.signer.public], now_ns=now_ns))


def _codes(report: VerifyReport) -> set[str]:
    return {f.code for f in report.findings}


def _abandon(ledger: Ledger, **kwargs: object) -> str:
    result = abandon_stream(
        ledger.dest,
        "app",
        ledger.signer,
        now_ns=DEFAULT_START_NS + HOUR_NS,
        retention=None,
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.outcome == "abandoned", result
    assert result.checkpoint is not None
    return result.checkpoint


def test_a_crashed_stream_is_stale_until_it_is_abandoned(crashed: Ledger) -> None:
    before = _verify(crashed)
    assert _codes(before) == {"stream-stale"}
    named = crashed.checkpoints("app")[-1]

    name = _abandon(crashed)

    assert name == named.replace("ckpt-000000000003", "ckpt-000000000004")
    report = _verify(crashed)
    assert report.ok, report.summary()
    [stream] = report.streams
    assert (stream.state, stream.closed, stream.abandoned) == ("closed-abandoned", False, True)
    assert report.events_verified == 30
    assert "1 streams (0 closed, 1 closed-abandoned, 0 open)" in report.summary()
    assert "stream app: closed-abandoned" in report.summary()
    [note] = [w for w in report.warnings if w.code == "abandoned"]
    assert note.object == name and "last checkpoint (3)" in note.message
    document = report.to_json()
    assert document["stream_counts"] == {"closed": 0, "closed-abandoned": 1, "open": 0}
    assert document["streams"][0]["state"] == "closed-abandoned"
    assert document["streams"][0]["abandoned"] is True


def test_the_cli_reports_the_abandoned_stream(crashed: Ledger) -> None:
    _abandon(crashed)
    code, out = crashed.verify("--json")
    assert code == 0, out
    document = json.loads(out)
    assert document["result"] == "PASS"
    assert document["stream_counts"]["closed-abandoned"] == 1


def test_deleting_the_checkpoint_the_record_names_is_a_finding(crashed: Ledger) -> None:
    named = crashed.checkpoints("app")[-1]
    _abandon(crashed)
    crashed.delete(named)
    assert "checkpoint-missing" in _codes(_verify(crashed))


def test_deleting_the_abandon_checkpoint_makes_the_stream_stale_again(crashed: Ledger) -> None:
    name = _abandon(crashed)
    crashed.delete(name)
    report = _verify(crashed)
    assert _codes(report) == {"stream-stale"}
    assert report.streams[0].state == "open"


def test_deleting_the_tail_with_the_record_is_still_found(crashed: Ledger) -> None:
    """Tail deletion after abandonment: the last segment and every checkpoint from the
    one covering it on, so the ledger ends at an earlier checkpoint: stale, not PASS."""
    _abandon(crashed)
    crashed.delete(crashed.segments("app")[-1])
    for name in crashed.checkpoints("app")[3:]:
        crashed.delete(name)
    assert "stream-stale" in _codes(_verify(crashed))


def test_a_checkpoint_the_record_names_that_differs_is_a_finding(crashed: Ledger) -> None:
    """The named checkpoint replaced by another one signed with the same key (a changed
    time): the abandon checkpoint's prev no longer matches it."""
    named = crashed.checkpoints("app")[-1]
    _abandon(crashed)
    signed = decode_checkpoint(crashed.read(named))
    from dataclasses import replace

    from auditlock.ledger.timestamps import format_ns

    changed = replace(signed.checkpoint, time=format_ns(signed.checkpoint.time_ns + 1))
    crashed.write(named, encode_checkpoint(changed, crashed.signer)[0])
    assert "checkpoint-chain-broken" in _codes(_verify(crashed))


def test_a_segment_stored_after_the_abandon_checkpoint_is_a_finding(crashed: Ledger) -> None:
    _abandon(crashed)
    last = crashed.segments("app")[-1]
    crashed.write(last.replace("000000000020-000000000029", "000000000030-000000000039"), b"")
    codes = _codes(_verify(crashed))
    assert "unsigned-events" in codes


def test_a_checkpoint_stored_after_the_abandon_checkpoint_is_a_finding(crashed: Ledger) -> None:
    name = _abandon(crashed)
    signed = decode_checkpoint(crashed.read(name))
    from dataclasses import replace

    later = replace(signed.checkpoint, index=signed.checkpoint.index + 1, kind="heartbeat",
                    prev=signed.digest)  # fmt: skip
    crashed.write(name.replace("ckpt-000000000004", "ckpt-000000000005"),
                  encode_checkpoint(later, crashed.signer)[0])  # fmt: skip
    assert "checkpoint-after-close" in _codes(_verify(crashed))


def test_an_abandon_checkpoint_signed_by_an_untrusted_key_is_a_finding(crashed: Ledger) -> None:
    """Someone with write access to the bucket but not the policy's key plants one."""
    result = abandon_stream(crashed.dest, "app", make_signer(), now_ns=LATER, retention=None)
    assert result.outcome == "foreign-key"  # our own writer refuses to
    from dataclasses import replace

    intruder = make_signer()
    named = crashed.checkpoints("app")[-1]
    tip = decode_checkpoint(crashed.read(named))
    forged = replace(tip.checkpoint, index=4, kind="abandon", prev=tip.digest,
                     key_id=intruder.key_id)  # fmt: skip
    crashed.write(named.replace("ckpt-000000000003", "ckpt-000000000004"),
                  encode_checkpoint(forged, intruder)[0])  # fmt: skip
    report = _verify(crashed)
    assert "unknown-key" in _codes(report)
    assert report.streams[0].state == "open"


def test_segments_stored_after_the_last_checkpoint_are_adopted_and_named(tmp_path: Path) -> None:
    """The writer stored a segment and died before its checkpoint: the abandon checkpoint
    covers those events (as a resume would) and verify names them."""
    ledger = new_ledger(tmp_path)
    writer = write_stream(ledger, "app", events=30, per_segment=10, close=False)
    for i, (_, event) in enumerate(synthetic_events("app", 5, start_ns=DEFAULT_START_NS)):
        writer.append(dict(event, id=f"late-{i}"))
    objects = writer.seal()
    writer.store([o for o in objects if o.kind == "segment"])
    assert _codes(_verify(ledger)) == {"stream-stale"}

    result = abandon_stream(
        ledger.dest, "app", ledger.signer, now_ns=DEFAULT_START_NS + HOUR_NS, retention=None
    )

    assert (result.outcome, result.adopted) == ("abandoned", 5)
    report = _verify(ledger)
    assert report.ok, report.summary()
    assert report.events_verified == 35
    [adopted] = [w for w in report.warnings if w.code == "abandoned-adopted"]
    assert (adopted.first_seq, adopted.last_seq) == (30, 34)


def test_a_writer_that_comes_back_starts_a_new_epoch(crashed: Ledger) -> None:
    _abandon(crashed)
    clock = SimulatedClock(DEFAULT_START_NS + 2 * HOUR_NS)
    writer = StreamWriter.resume(crashed.dest, "app", crashed.signer, retention=None, clock=clock)
    assert writer.epoch == 1
    writer.store(writer.heartbeat())
    clock.now += 1_000_000_000
    writer.store(writer.close())
    report = _verify(crashed)
    assert report.ok, report.summary()
    assert report.streams[0].state == "closed"


def test_refusals(crashed: Ledger, tmp_path: Path) -> None:
    named = crashed.checkpoints("app")[-1]
    moved = abandon_stream(
        crashed.dest, "app", crashed.signer, now_ns=LATER, retention=None, expect="other"
    )
    assert moved.outcome == "moved-on" and moved.named == named
    # Someone (the writer, alive after all) took the next name first.
    crashed.write(named.replace("ckpt-000000000003", "ckpt-000000000004"), b"taken\n")
    raced = abandon_stream(crashed.dest, "app", crashed.signer, now_ns=LATER, retention=None)
    assert raced.outcome == "unusable"  # the newest checkpoint is now that unreadable object
    closed = new_ledger(tmp_path / "closed")
    write_stream(closed, "app", events=5, close=True)
    done = abandon_stream(closed.dest, "app", closed.signer, now_ns=LATER, retention=None)
    assert done.outcome == "already-closed"
    empty = abandon_stream(closed.dest, "none", closed.signer, now_ns=LATER, retention=None)
    assert empty.outcome == "unusable"


def test_a_lost_race_for_the_name_writes_nothing(crashed: Ledger) -> None:
    """The writer's own next checkpoint lands between the operator's read and its put."""
    from auditlock.sinks.base import ObjectConflict

    named = crashed.checkpoints("app")[-1]
    taken = named.replace("ckpt-000000000003", "ckpt-000000000004")
    original_put = crashed.dest.put

    def put(name: str, data: bytes, retention: object) -> object:
        if name == taken:
            original_put(name, b"the writer's checkpoint\n", None)  # type: ignore[arg-type]
            raise ObjectConflict(name)
        return original_put(name, data, retention)  # type: ignore[arg-type]

    crashed.dest.put = put  # type: ignore[method-assign]
    result = abandon_stream(crashed.dest, "app", crashed.signer, now_ns=LATER, retention=None)
    assert result.outcome == "raced"
    assert crashed.read(taken) == b"the writer's checkpoint\n"


def test_newest_checkpoint_of_one_and_of_every_stream(crashed: Ledger) -> None:
    write_stream(crashed, "other", events=5, close=True)
    tip = newest_checkpoint(crashed.dest, "app")
    assert tip is not None and tip.signed is not None
    assert (tip.epoch, tip.index, tip.name) == (0, 3, crashed.checkpoints("app")[-1])
    assert tip.digest == tip.signed.digest
    tips = newest_checkpoints(crashed.dest)
    assert sorted(tips) == ["app", "other"]
    assert tips["other"].signed is not None and tips["other"].signed.checkpoint.kind == "close"
    assert newest_checkpoint(crashed.dest, "missing") is None
    # A corrupt newest checkpoint is reported, not raised.
    crashed.write(tip.name, b"garbage\n")
    broken = newest_checkpoint(crashed.dest, "app")
    assert broken is not None and broken.signed is None and broken.problem


def test_the_independent_verifier_accepts_the_abandon_checkpoint(tmp_path: Path) -> None:
    """The abandon checkpoint, adopted events included, satisfies FORMAT.md's checkpoint
    rules as the verifier written from FORMAT.md alone computes them (chain, Merkle root
    of the covered lines, frontier, head, signature)."""
    from tests.helpers.spec_verifier import spec_verify

    ledger = new_ledger(tmp_path)
    writer = write_stream(ledger, "app", events=20, per_segment=10, close=False)
    for i, (_, event) in enumerate(synthetic_events("app", 3, start_ns=DEFAULT_START_NS)):
        writer.append(dict(event, id=f"late-{i}"))
    writer.store([o for o in writer.seal() if o.kind == "segment"])
    _abandon(ledger)
    assert spec_verify(ledger.root, ledger.signer.public) == {"app": 23}
