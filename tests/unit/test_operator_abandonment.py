"""When the operator judges a stream's writer gone for good (docs/operator.md, "Abandoned
streams"): the pod of the stream's name is absent (or is a later pod without the
collector) for the whole grace delay, with the newest checkpoint unchanged all along.

The tips are read from real ledgers on file://; the clock is a number the test moves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditlock.ledger.abandon import AbandonResult
from auditlock.ledger.newest import StreamTip, newest_checkpoints
from auditlock.ledger.synth import DEFAULT_START_NS
from auditlock.operator.abandonment import AbandonWatch
from auditlock.operator.kube import PodFacts

from .ledger_helpers import Ledger, new_ledger, write_stream

URL = "file:///trail"
CLUSTER = "prod-eu"
NS = "shop"
WRITTEN = datetime.fromtimestamp(DEFAULT_START_NS / 1e9, UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = new_ledger(tmp_path)
    write_stream(led, f"{CLUSTER}_{NS}_orders-0", events=20, close=False)  # killed
    write_stream(led, f"{CLUSTER}_{NS}_orders-1", events=20, close=True)  # shut down cleanly
    write_stream(led, f"{CLUSTER}_other_orders-0", events=20, close=False)  # another namespace
    # Another cluster writing the same prefix, same namespace and pod names.
    write_stream(led, f"prod-us_{NS}_orders-0", events=20, close=False)
    return led


def _tips(ledger: Ledger) -> dict[str, StreamTip]:
    return newest_checkpoints(ledger.dest)


def _watch() -> tuple[AbandonWatch, Clock]:
    clock = Clock()
    return AbandonWatch(grace_seconds=60, clock=clock), clock


def _due(watch: AbandonWatch, tips: dict[str, StreamTip], pods: dict[str, PodFacts]) -> list[str]:
    return [t.stream for t in watch.due(URL, CLUSTER, NS, tips, pods)]


def test_an_absent_pod_is_due_after_the_grace_delay_only(ledger: Ledger) -> None:
    watch, clock = _watch()
    tips = _tips(ledger)
    assert _due(watch, tips, {}) == []  # first sight starts the wait
    clock.now += 59
    assert _due(watch, tips, {}) == []
    clock.now += 1
    # Only the open stream of this namespace in this cluster; the closed one, the other
    # namespace's and the other cluster's (same namespace and pod names) are not this
    # policy's to close.
    assert _due(watch, tips, {}) == [f"{CLUSTER}_{NS}_orders-0"]


def test_a_pod_that_exists_with_the_collector_is_never_due(ledger: Ledger) -> None:
    watch, clock = _watch()
    alive = {"orders-0": PodFacts("uid-1", WRITTEN - timedelta(hours=1), collector=True)}
    for _ in range(5):
        assert _due(watch, _tips(ledger), alive) == []
        clock.now += 60


def test_a_pod_that_comes_back_restarts_the_wait(ledger: Ledger) -> None:
    watch, clock = _watch()
    tips = _tips(ledger)
    _due(watch, tips, {})
    clock.now += 50
    # Recreated under the same name with the collector: it will resume the stream.
    back = {"orders-0": PodFacts("uid-2", WRITTEN + timedelta(hours=1), collector=True)}
    assert _due(watch, tips, back) == []
    clock.now += 50
    assert _due(watch, tips, {}) == []  # gone again: a new wait
    clock.now += 60
    assert _due(watch, tips, {}) == [f"{CLUSTER}_{NS}_orders-0"]


def test_a_later_pod_without_the_collector_does_not_keep_the_stream_open(
    ledger: Ledger,
) -> None:
    watch, clock = _watch()
    tips = _tips(ledger)
    later = {"orders-0": PodFacts("uid-2", WRITTEN + timedelta(days=1), collector=False)}
    _due(watch, tips, later)
    clock.now += 60
    assert _due(watch, tips, later) == [f"{CLUSTER}_{NS}_orders-0"]
    # The same name created before the newest checkpoint may be the writer itself.
    same = {"orders-0": PodFacts("uid-1", WRITTEN - timedelta(days=1), collector=False)}
    watch2, clock2 = _watch()
    _due(watch2, tips, same)
    clock2.now += 600
    assert _due(watch2, tips, same) == []


def test_a_new_checkpoint_during_the_wait_restarts_it(ledger: Ledger) -> None:
    """A force-deleted pod whose collector is still running keeps writing checkpoints."""
    watch, clock = _watch()
    _due(watch, _tips(ledger), {})
    clock.now += 50
    write_stream(ledger, f"{CLUSTER}_{NS}_orders-0", events=5, close=False)  # the writer goes on
    assert _due(watch, _tips(ledger), {}) == []
    clock.now += 50
    assert _due(watch, _tips(ledger), {}) == []
    clock.now += 10
    assert _due(watch, _tips(ledger), {}) == [f"{CLUSTER}_{NS}_orders-0"]


def test_an_attempt_that_cannot_succeed_is_not_repeated_for_the_same_tip(ledger: Ledger) -> None:
    watch, clock = _watch()
    tips = _tips(ledger)
    _due(watch, tips, {})
    clock.now += 60
    [tip] = watch.due(URL, CLUSTER, NS, tips, {})
    watch.settled(URL, tip, AbandonResult("unusable", "bad signature"))
    clock.now += 600
    assert _due(watch, tips, {}) == []
    # A lost race forgets the wait: the stream is looked at afresh.
    watch2, clock2 = _watch()
    _due(watch2, tips, {})
    clock2.now += 60
    [tip] = watch2.due(URL, CLUSTER, NS, tips, {})
    watch2.settled(URL, tip, AbandonResult("raced", "taken"))
    assert _due(watch2, tips, {}) == []
    clock2.now += 60
    assert _due(watch2, tips, {}) == [f"{CLUSTER}_{NS}_orders-0"]


def test_a_stream_whose_tail_was_deleted_is_reported_and_never_closed(ledger: Ledger) -> None:
    """Someone able to delete objects (an unlocked bucket) removes the newest checkpoint
    while the pod is gone: closing the stream now would seal the truncation."""
    watch, clock = _watch()
    _due(watch, _tips(ledger), {})
    stream = f"{CLUSTER}_{NS}_orders-0"
    newest = ledger.checkpoints(stream)[-1]
    ledger.delete(newest)
    for _ in range(3):
        clock.now += 60
        assert _due(watch, _tips(ledger), {}) == []
    [rollback] = watch.rollbacks()
    assert rollback.tip.stream == stream and rollback.seen == (0, int(newest[-17:-5]))
    assert rollback.tip.index == rollback.seen[1] - 1
    assert watch.rollbacks() == []  # each truncated tip is reported once
