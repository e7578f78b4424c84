"""Retrying transient destination failures with exponential backoff and full jitter.

Only calls that are safe to repeat go through here. Every write in auditlock is: object
names are deterministic and writes are conditional (create-only), so repeating an upload
that did land is answered by "already there, same bytes" rather than a second copy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from auditlock.sinks.base import DestinationError, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. The defaults ride out a server restart of about a minute."""

    attempts: int = 8
    base_delay: float = 0.2  # seconds before the first retry (upper bound of the jitter)
    max_delay: float = 10.0  # cap on any single wait
    deadline: float = 90.0  # give up after this many seconds in total

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**n)] (AWS architecture blog)."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry_number))
        return (rng or random).uniform(0, ceiling)


NO_RETRY = RetryPolicy(attempts=1)


def retry_policy(value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
    """A destination's `retry` option: a RetryPolicy, or its fields by name (how a
    collector's config file gives it: `retry: {attempts: 3, max_delay: 1.0}`); None: the
    defaults."""
    if value is None:
        return RetryPolicy()
    if isinstance(value, RetryPolicy):
        return value
    if not isinstance(value, Mapping):
        raise DestinationError(f"retry: expected a mapping of {_FIELDS}, got {value!r}")
    unknown = sorted(set(value) - set(_FIELDS.split(", ")))
    if unknown:
        raise DestinationError(f"retry: unknown field(s) {', '.join(unknown)}; known: {_FIELDS}")
    for name, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
            raise DestinationError(f"retry: {name} must be a positive number, got {number!r}")
    if "attempts" in value and not float(value["attempts"]).is_integer():
        raise DestinationError(f"retry: attempts must be a whole number, got {value['attempts']!r}")
    defaults = RetryPolicy()
    return RetryPolicy(
        attempts=int(value.get("attempts", defaults.attempts)),
        base_delay=float(value.get("base_delay", defaults.base_delay)),
        max_delay=float(value.get("max_delay", defaults.max_delay)),
        deadline=float(value.get("deadline", defaults.deadline)),
    )


_FIELDS = "attempts, base_delay, max_delay, deadline"


def call_with_retries(
    fn: Callable[[], T],
    *,
    is_transient: Callable[[BaseException], bool],
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `fn`; on an error `is_transient` accepts, wait and try again.

    Permanent errors propagate at once. When attempts or the deadline run out, raises
    TransientError naming `what`, the number of attempts and the last error.
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            elapsed = clock() - start
            wait = policy.delay(attempt - 1)
            if attempt >= policy.attempts or elapsed + wait > policy.deadline:
                raise TransientError(
                    f"{what} failed {attempt} time(s) over {elapsed:.1f} s with transient "
                    f"errors; last: {exc}. The destination may be down or throttling; "
                    "the data was not stored and will be retried later"
                ) from exc
            log.warning("%s: transient error (attempt %d), retrying in %.2fs: %s",
                        what, attempt, wait, exc)  # fmt: skip
            sleep(wait)
