"""StreamWriter.extend: a batch of events in one encoder call writes exactly the bytes that
appending them one by one writes, and refuses a batch as a whole when `append` would
refuse one of its events."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.errors import LedgerError
from auditlock.ledger.limits import MAX_EVENT_BYTES
from auditlock.ledger.names import MAX_SEQ
from auditlock.ledger.normalize import normalize_event
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.writer import ClosedStreamError, StreamWriter

from .ledger_helpers import Ledger, make_signer, new_ledger
from .ledger_strategies import events as raw_events

SIGNER = make_signer(7)
_streams = itertools.count()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """One store for every example of the property test: each writes its own streams."""
    return new_ledger(tmp_path_factory.mktemp("extend"), SIGNER)


def _writer(root: Path | Ledger, stream: str = "s") -> StreamWriter:
    ledger = root if isinstance(root, Ledger) else new_ledger(root, SIGNER)
    return ledger.writer(stream, clock=SimulatedClock(DEFAULT_START_NS))


def _sealed(writer: StreamWriter) -> list[bytes]:
    """Every object a seal and a close produce: key, checkpoints (signed, so they cover
    the tree's root and head), segments."""
    return [o.data for o in writer.seal() + writer.close()]


def _synthetic(n: int) -> list[dict[str, Any]]:
    return [event for _, event in synthetic_events("s", n)]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(raw_events(), min_size=1, max_size=5),
    st.lists(st.integers(min_value=0, max_value=5), max_size=3),
)
def test_extend_writes_the_bytes_of_append_one_by_one(
    shared: Ledger, raw: list[dict[str, Any]], cuts: list[int]
) -> None:
    batch = [normalize_event(event) for event in raw]
    # The same events in batches cut at arbitrary points (some empty).
    bounds = [0, *sorted(min(c, len(batch)) for c in cuts), len(batch)]
    stream = f"s{next(_streams)}"
    one_by_one = _writer(shared, stream)
    seqs = [one_by_one.append(event) for event in batch]
    in_batches = _writer(shared, stream)  # nothing stored: the same stream, from scratch
    for lo, hi in itertools.pairwise(bounds):
        in_batches.extend(batch[lo:hi])
    assert seqs == list(range(len(batch)))
    assert in_batches.next_seq == one_by_one.next_seq == len(batch)
    assert _sealed(in_batches) == _sealed(one_by_one)


def test_a_batch_with_an_event_too_large_is_refused_whole(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.extend(_synthetic(2))
    big = dict(_synthetic(1)[0], details={"blob": "b" * MAX_EVENT_BYTES})
    with pytest.raises(LedgerError, match=f"event 1 of the batch is .* than {MAX_EVENT_BYTES}"):
        writer.extend([_synthetic(3)[2], big, _synthetic(4)[3]])
    assert (writer.next_seq, writer.pending_events) == (2, 2)  # nothing of it appended
    segments = [o for o in writer.seal() if o.kind == "segment"]
    assert [(s.first_seq, s.last_seq) for s in segments] == [(0, 1)]


def test_a_batch_larger_than_one_event_may_be_is_accepted(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    half = MAX_EVENT_BYTES // 2
    batch = [dict(e, details={"blob": "b" * half}) for e in _synthetic(3)]  # 1.5x in all
    writer.extend(batch)
    assert writer.next_seq == 3


def test_a_batch_that_does_not_fit_in_the_epoch_is_refused_whole(tmp_path: Path) -> None:
    events = _synthetic(3)
    one_by_one, in_batch = _writer(tmp_path / "a"), _writer(tmp_path / "b")
    # The last seq of an epoch (FORMAT.md: 12 digits) is close: one by one, the event
    # of seq MAX_SEQ raises; a batch reaching that seq is refused whole.
    one_by_one.next_seq = in_batch.next_seq = MAX_SEQ - 2
    one_by_one.append(events[0])
    one_by_one.append(events[1])
    with pytest.raises(LedgerError, match="is full"):
        one_by_one.append(events[2])
    with pytest.raises(LedgerError, match="is full"):
        in_batch.extend(events)
    assert (in_batch.next_seq, in_batch.pending_events) == (MAX_SEQ - 2, 0)
    in_batch.extend(events[:2])
    assert in_batch.next_seq == MAX_SEQ


def test_a_closed_stream_refuses_a_batch(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.extend(_synthetic(1))
    writer.close()
    with pytest.raises(ClosedStreamError):
        writer.extend(_synthetic(1))
    with pytest.raises(ClosedStreamError):
        writer.extend([])  # as append would, even with nothing to add
    assert writer.next_seq == 1


def test_a_value_no_encoder_can_write_leaves_the_writer_unchanged(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    events = _synthetic(2)
    with pytest.raises(TypeError):
        writer.extend([events[0], dict(events[1], details={"v": object()})])
    assert (writer.next_seq, writer.pending_events) == (0, 0)
