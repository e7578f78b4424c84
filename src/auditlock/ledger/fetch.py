"""Read objects ahead of use on a few threads.

Destinations are often remote (S3, GCS): one request at a time would leave the verifier
waiting on round trips while it could be hashing. The destination interface is blocking
and thread-safe, so a small pool keeps a bounded number of reads in flight, and results
come back in the order asked for.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

WORKERS = 8
AHEAD = 16


def prefetch(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int = WORKERS, ahead: int = AHEAD
) -> Iterator[tuple[T, R | Exception]]:
    """(item, fn(item) or the exception it raised), in order, at most `ahead` in flight.

    With workers=0 everything runs inline, one item at a time (local disks: threads
    would only add lock traffic)."""
    if workers <= 0:
        for item in items:
            try:
                value: R | Exception = fn(item)
            except Exception as exc:
                value = exc
            yield item, value
        return
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ledger-read") as pool:
        pending: deque[tuple[T, Future[R]]] = deque(
            (item, pool.submit(fn, item)) for item in itertools.islice(source, ahead)
        )
        while pending:
            item, future = pending.popleft()
            for following in itertools.islice(source, 1):
                pending.append((following, pool.submit(fn, following)))
            try:
                result: R | Exception = future.result()
            except Exception as exc:  # handed to the caller, which knows what it means
                result = exc
            yield item, result
