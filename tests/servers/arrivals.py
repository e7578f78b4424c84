"""Waiting for a matching item in a list that a server's thread appends to: the webhook
receiver's notifications, the audit receiver's events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def first_match(
    items: list[T], changed: threading.Condition, match: Callable[[T], bool], timeout: float
) -> T | None:
    """The first of `items` (appended to while holding `changed`, which is then notified)
    that `match` accepts, waiting up to `timeout` seconds; None when none came."""
    deadline = time.monotonic() + timeout
    seen = 0
    with changed:
        while True:
            for item in items[seen:]:
                if match(item):
                    return item
            seen = len(items)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            changed.wait(left)
