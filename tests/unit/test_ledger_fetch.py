"""prefetch: results in order, exceptions handed back, bounded work in flight."""

from __future__ import annotations

import threading
import time

from auditlock.ledger.fetch import prefetch


def test_results_come_back_in_order_with_exceptions_in_place() -> None:
    def work(n: int) -> int:
        time.sleep(0.001 * (10 - n % 10))  # later items finish first
        if n == 7:
            raise ValueError("seven")
        return n * n

    results = list(prefetch(work, range(30), workers=4, ahead=8))
    assert [item for item, _ in results] == list(range(30))
    assert isinstance(results[7][1], ValueError)
    assert all(r == n * n for n, r in results if n != 7)


def test_no_more_than_ahead_items_are_started_before_they_are_consumed() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        return n

    stream = prefetch(work, range(100), workers=2, ahead=5)
    next(stream)
    time.sleep(0.05)
    assert len(started) <= 6
    stream.close()


def test_inline_mode_has_the_same_results() -> None:
    def work(n: int) -> int:
        if n == 3:
            raise KeyError(n)
        return -n

    threaded = list(prefetch(work, range(10), workers=3))
    inline = list(prefetch(work, range(10), workers=0))
    assert [(i, r if not isinstance(r, Exception) else type(r)) for i, r in threaded] == [
        (i, r if not isinstance(r, Exception) else type(r)) for i, r in inline
    ]
