"""StreamWriter: sealing, ordered storing, heartbeats, resume, adoption, epochs, rotation."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from auditlock.ledger.checkpoint import body_digest, decode_checkpoint
from auditlock.ledger.errors import LedgerError
from auditlock.ledger.limits import MAX_EVENT_BYTES
from auditlock.ledger.rotation import publish_rotation
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.writer import ClosedStreamError, PendingObject, StreamWriter, plan_cuts

from .ledger_helpers import Ledger, make_signer, new_ledger

SECOND = 1_000_000_000


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return new_ledger(tmp_path)


def events(n: int, start: int = 0) -> list[dict[str, Any]]:
    items = list(synthetic_events("s", start + n, interval_ns=SECOND))
    return [event for _, event in items[start:]]


def open_writer(ledger: Ledger, clock: SimulatedClock | None = None, **kw: Any) -> StreamWriter:
    return ledger.writer("s", clock=clock or SimulatedClock(DEFAULT_START_NS), **kw)


def stored(ledger: Ledger, batch: list[dict[str, Any]]) -> StreamWriter:
    """A writer of stream "s" that has sealed and stored `batch`."""
    writer = open_writer(ledger)
    writer.store(feed(writer, batch))
    return writer


def close_and_verify(ledger: Ledger, writer: StreamWriter) -> tuple[int, str]:
    """Close the stream, store the closing checkpoint, and verify the whole ledger."""
    writer.store(writer.close())
    return ledger.verify()


def feed(writer: StreamWriter, batch: list[dict[str, Any]]) -> list[PendingObject]:
    for event in batch:
        writer.append(event)
    return writer.seal()


def test_first_seal_publishes_key_genesis_segment_and_checkpoint(ledger: Ledger) -> None:
    writer = open_writer(ledger)
    assert writer.heartbeat_due()
    objects = feed(writer, events(5))
    assert [o.kind for o in objects] == ["key", "checkpoint", "segment", "checkpoint"]
    assert objects[2].name == "streams/s/000000/seg-000000000000-000000000004.jsonl"
    assert (objects[2].first_seq, objects[2].last_seq) == (0, 4)
    assert (objects[3].checkpoint_index, objects[3].last_seq) == (1, 4)
    writer.store(objects)
    assert writer.stored_checkpoint_index == 1
    assert ledger.verify("--until", "2026-01-01T00:00:10Z")[0] == 0


def test_lines_are_a_pure_function_of_event_seq_and_prev(tmp_path: Path) -> None:
    a = new_ledger(tmp_path / "a")
    b = new_ledger(tmp_path / "b", make_signer())
    batch = events(7)
    seg_a = [o for o in feed(open_writer(a), batch) if o.kind == "segment"]
    clock = SimulatedClock(DEFAULT_START_NS + 999 * SECOND)  # another time, another key
    seg_b = [
        o for o in feed(open_writer(b, clock, signing_key=b.signer), batch) if o.kind == "segment"
    ]
    assert [(o.name, o.data) for o in seg_a] == [(o.name, o.data) for o in seg_b]


def test_checkpoints_are_stored_in_order_even_when_uploads_finish_out_of_order(
    ledger: Ledger,
) -> None:
    writer = open_writer(ledger)
    batches = [feed(writer, events(3, 3 * i)) for i in range(4)]
    threads = [threading.Thread(target=writer.store, args=(b,)) for b in reversed(batches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert writer.stored_checkpoint_index == 4
    writer.store(writer.close())
    assert ledger.verify()[0] == 0


def test_a_stuck_predecessor_is_stored_by_the_next_call(ledger: Ledger) -> None:
    writer = open_writer(ledger)
    first = feed(writer, events(2))
    second = feed(writer, events(2, 2))
    writer.store(second, timeout=0.1)  # first's own call never happens (stuck, or crashed)
    assert writer.stored_checkpoint_index == 2
    assert all(ledger.path(o.name).exists() for o in first)
    writer.store(first)  # the late call is an idempotent no-op
    writer.store(writer.close())
    assert ledger.verify()[0] == 0


def test_store_never_deadlocks_when_all_threads_wait(ledger: Ledger) -> None:
    # More waiting calls than threads would starve the call they wait for, were it not
    # for the writer storing earlier batches itself.
    from concurrent.futures import ThreadPoolExecutor

    writer = open_writer(ledger)
    batches = [feed(writer, events(2, 2 * i)) for i in range(6)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(writer.store, b, timeout=0.1) for b in reversed(batches)]
        for f in futures:
            f.result(timeout=30)
    assert writer.stored_checkpoint_index == 6
    writer.store(writer.close())
    assert ledger.verify()[0] == 0


def test_heartbeat_is_due_after_the_interval_and_writes_a_checkpoint(ledger: Ledger) -> None:
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = open_writer(ledger, clock, heartbeat_seconds=60)
    writer.store(writer.heartbeat())
    assert not writer.heartbeat_due()
    clock.now += 59 * SECOND
    assert not writer.heartbeat_due()
    clock.now += SECOND
    assert writer.heartbeat_due()
    objects = writer.heartbeat()
    assert [o.kind for o in objects] == ["checkpoint"]
    assert decode_checkpoint(objects[0].data).checkpoint.kind == "heartbeat"


def test_resume_continues_the_chain(ledger: Ledger) -> None:
    stored(ledger, events(10))
    again = open_writer(ledger)
    assert (again.epoch, again.next_seq, again.resumed_seq) == (0, 10, 10)
    again.store(feed(again, events(5, 10)))
    code, out = close_and_verify(ledger, again)
    assert code == 0, out
    assert "15 events" in out and "1 epoch(s)" in out


def test_resume_adopts_segments_stored_after_the_last_checkpoint(ledger: Ledger) -> None:
    writer = stored(ledger, events(10))
    crashed = feed(writer, events(10, 10))
    writer.store([o for o in crashed if o.kind == "segment"])  # crash before the checkpoint
    again = open_writer(ledger)
    assert (again.epoch, again.next_seq) == (0, 20)
    assert again.heartbeat_due()
    again.store(again.heartbeat())  # covers the adopted events
    again.store(feed(again, events(5, 20)))
    assert close_and_verify(ledger, again)[0] == 0


def test_resume_after_a_gap_recreates_the_later_segment_byte_for_byte(ledger: Ledger) -> None:
    writer = stored(ledger, events(10))
    lost = feed(writer, events(10, 10))  # seqs 10..19: its upload never happened
    landed = feed(writer, events(10, 20))  # seqs 20..29: its segment landed
    writer.store([o for o in landed if o.kind == "segment"])
    assert lost
    again = open_writer(ledger)
    assert again.next_seq == 10  # the caller re-feeds from seq 10
    for event in events(25, 10):  # in different batch sizes than before
        again.append(event)
        if again.pending_events == 7:
            objects = again.seal()
            for o in objects:
                if o.kind == "segment":
                    assert o.first_seq is not None and o.last_seq is not None
                    overlaps = o.first_seq <= 29 and o.last_seq >= 20
                    assert not overlaps or (o.first_seq, o.last_seq) == (20, 29), o.name
            again.store(objects)
    code, out = close_and_verify(ledger, again)
    assert code == 0, out
    assert "35 events" in out


def test_plan_cuts_never_cross_or_split_a_reserved_segment() -> None:
    assert plan_cuts(10, 15, [(20, 29)]) == [(10, 14)]
    assert plan_cuts(10, 25, [(20, 29)]) == [(10, 19)]  # 20..24 held back
    assert plan_cuts(10, 35, [(20, 29)]) == [(10, 19), (20, 29), (30, 34)]
    assert plan_cuts(20, 30, [(20, 29)]) == [(20, 29)]


def test_resume_after_close_starts_a_new_epoch_that_commits_to_the_old_one(ledger: Ledger) -> None:
    writer = stored(ledger, events(4))
    closing = writer.close()
    writer.store(closing)
    with pytest.raises(ClosedStreamError):
        writer.append(events(1)[0])
    clock = SimulatedClock(DEFAULT_START_NS + 30 * SECOND)
    again = open_writer(ledger, clock)
    assert (again.epoch, again.next_seq) == (1, 0)
    objects = feed(again, events(3, 4))
    genesis = decode_checkpoint(objects[1].data).checkpoint
    assert genesis.kind == "genesis"
    assert genesis.prev == body_digest(closing[-1].data.split(b"\n")[0])
    again.store(objects)
    code, out = close_and_verify(ledger, again)
    assert code == 0, out
    assert "2 epoch(s)" in out and "warning: stream s epoch 1: new epoch after a restart" in out


def test_resume_with_a_corrupt_tail_segment_starts_a_new_epoch(ledger: Ledger) -> None:
    stored(ledger, events(4))
    ledger.write("streams/s/000000/seg-000000000004-000000000005.jsonl", b"garbage\n")
    again = open_writer(ledger)
    assert again.epoch == 1
    again.store(feed(again, events(2, 4)))
    code, out = close_and_verify(ledger, again)
    assert code == 1  # the garbage is still there, and verify says where
    assert "streams/s/000000/seg-000000000004-000000000005.jsonl" in out


def test_key_rotation_signed_by_the_old_key_verifies(ledger: Ledger) -> None:
    stored(ledger, events(4))
    new = make_signer()
    publish_rotation(
        ledger.dest, ledger.signer, new.public, retention=None, time_ns=DEFAULT_START_NS
    )
    again = open_writer(ledger, signing_key=new)
    again.store(feed(again, events(4, 4)))
    code, out = close_and_verify(ledger, again)  # anchored to the OLD public key only
    assert code == 0, out


def test_new_key_without_rotation_record_is_unknown(ledger: Ledger) -> None:
    stored(ledger, events(4))
    again = open_writer(ledger, signing_key=make_signer())
    again.store(feed(again, events(4, 4)))
    code, out = close_and_verify(ledger, again)
    assert code == 1 and "unknown-key" in out


def test_a_restart_within_an_epoch_is_declared_and_not_a_time_gap(ledger: Ledger) -> None:
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = open_writer(ledger, clock)
    writer.store(feed(writer, events(4)))
    clock.now += 15 * 60 * SECOND  # the pod was down for 15 minutes
    again = open_writer(ledger, clock)
    first = again.heartbeat()
    assert decode_checkpoint(first[-1].data).checkpoint.kind == "resume"
    again.store(first)
    again.store(feed(again, events(2, 4)))
    code, out = close_and_verify(ledger, again)
    assert code == 0, out
    assert "warning: stream s epoch 0" in out and "writer restarted" in out


def test_a_planted_segment_after_the_tail_is_not_trusted(ledger: Ledger) -> None:
    stored(ledger, events(10))
    ledger.write("streams/s/000000/seg-000000000100-999999999999.jsonl", b"junk\n")
    again = open_writer(ledger)
    assert again.epoch == 1  # not holding re-fed events back for a segment that cannot be
    objects = feed(again, events(5, 10))
    assert any(o.kind == "segment" for o in objects)


def test_resume_when_only_segments_of_a_new_epoch_landed(ledger: Ledger) -> None:
    writer = open_writer(ledger)
    objects = feed(writer, events(6))
    writer.store([o for o in objects if o.kind == "segment"])  # crash: no key, no genesis
    again = open_writer(ledger)
    assert (again.epoch, again.next_seq) == (0, 6)
    first = again.heartbeat()
    kinds = [decode_checkpoint(o.data).checkpoint.kind for o in first if o.kind == "checkpoint"]
    assert kinds == ["genesis", "seal"]
    again.store(first)
    code, out = close_and_verify(ledger, again)
    assert code == 0, out
    assert "6 events" in out


def test_extend_canonical_is_append_canonical_for_each(tmp_path: Path) -> None:
    canonical = [b'{"n":%d}' % n for n in range(5)]
    segments = []
    for at_once in (False, True):
        writer = open_writer(new_ledger(tmp_path / str(at_once)))
        if at_once:
            writer.extend_canonical(canonical)
        else:
            for event in canonical:
                writer.append_canonical(event)
        assert writer.next_seq == 5
        segments.append([o.data for o in writer.seal() if o.kind == "segment"])
    assert segments[0] == segments[1] != []
    # One too large: those before it are appended, then it raises, as one by one.
    writer = open_writer(new_ledger(tmp_path / "big"))
    with pytest.raises(LedgerError):
        writer.extend_canonical([b"{}", b"x" * (MAX_EVENT_BYTES + 1), b"{}"])
    assert writer.next_seq == 1
