"""Exactly-once across crashes: stop the writer after every possible number of stored
objects (segments landing out of order, as concurrent uploads do), resume, re-feed from
`next_seq`, and check the ledger verifies and holds every event exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock, synthetic_events
from auditlock.ledger.writer import PendingObject, StreamWriter

from .ledger_helpers import Ledger, make_signer, new_ledger

SECOND = 1_000_000_000
EVENTS = [event for _, event in synthetic_events("s", 40, interval_ns=SECOND)]
SIGNER = make_signer(7)


def _writer(ledger: Ledger, clock: SimulatedClock) -> StreamWriter:
    return StreamWriter.resume(ledger.dest, "s", SIGNER, retention=None, clock=clock)


def _puts_of_a_full_run(ledger: Ledger) -> list[PendingObject]:
    """Every object a run stores, in an order concurrent uploads may produce: the segment
    of each odd batch lands before the segment of the batch before it; checkpoints stay in
    index order, each after its own segment."""
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = _writer(ledger, clock)
    batches: list[list[PendingObject]] = [writer.heartbeat()]
    for i, event in enumerate(EVENTS, 1):
        clock.now += SECOND
        writer.append(event)
        if i % 7 == 0:
            batches.append(writer.seal())
    clock.now += SECOND
    batches.append(writer.close())
    order: list[PendingObject] = list(batches[0])
    rest = batches[1:]
    for i in range(0, len(rest), 2):
        pair = rest[i : i + 2]
        segments = [o for b in reversed(pair) for o in b if o.kind != "checkpoint"]
        checkpoints = [o for b in pair for o in b if o.kind == "checkpoint"]
        order += segments + checkpoints
    return order


def _events_in(ledger: Ledger) -> list[str]:
    ids = []
    for name in ledger.segments("s"):
        for line in ledger.read(name).splitlines():
            ids.append(json.loads(line)["event"]["id"])
    return ids


@pytest.mark.parametrize("crash_after", range(0, 15))
def test_crash_after_any_stored_object_then_resume_is_exactly_once(
    tmp_path: Path, crash_after: int
) -> None:
    plan = _puts_of_a_full_run(new_ledger(tmp_path / "plan", SIGNER))
    assert crash_after <= len(plan)
    ledger = new_ledger(tmp_path / "run", SIGNER)
    for obj in plan[:crash_after]:
        ledger.dest.put(obj.name, obj.data, None)
    clock = SimulatedClock(DEFAULT_START_NS + 100 * SECOND)
    writer = _writer(ledger, clock)
    if writer.epoch == 0:
        start = writer.next_seq  # the spool re-feeds what the ledger does not hold yet
    else:  # only after the close landed: a new epoch, and every event was released
        assert crash_after == len(plan)
        start = len(EVENTS)
    objects: list[Any] = writer.heartbeat()
    for i, event in enumerate(EVENTS[start:], 1):
        clock.now += SECOND
        writer.append(event)
        if i % 5 == 0:
            objects += writer.seal()
    clock.now += SECOND
    objects += writer.close()
    writer.store(objects)
    code, out = ledger.verify(key=False)
    assert code == 0, out
    ids = _events_in(ledger)
    assert sorted(ids) == sorted(e["id"] for e in EVENTS), "every event exactly once"
