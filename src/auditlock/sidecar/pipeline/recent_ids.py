"""The event ids a sender chose, remembered so that one repeated within a stream is
refused (docs/sidecar.md, "Event ids").

Only ids a sender supplied are remembered: the ids the collector assigns
(`<boot id>-<counter>`) are unique by construction, and a sender id that starts with this
process's boot id is refused outright. The window is the last WINDOW committed sender ids
of this collector process (a restart starts an empty window). An id is remembered once
its event is committed to the spool, so a batch refused or not stored (400, 503, a closed
connection) can be resent with the same ids. Ids are kept as 64-bit hashes (about 70 bytes
each, ~7 MiB for the whole window); two different ids share one with probability about
WINDOW / 2**64 per event.
"""

from __future__ import annotations

from collections import deque

WINDOW = 100_000


class RecentIds:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._known: set[int] = set()
        self._order: deque[int] = deque()

    def __contains__(self, key: int) -> bool:
        return key in self._known

    def add(self, keys: list[int]) -> None:
        known = self._known
        order = self._order
        for key in keys:
            if key in known:
                continue
            known.add(key)
            order.append(key)
            if len(order) > self.window:
                known.discard(order.popleft())

    def discard(self, keys: list[int]) -> None:
        """Forget keys added for a commit that failed (the events were not stored)."""
        for key in keys:
            self._known.discard(key)
        # The deque keeps their slots until they age out; a key added again later is
        # found in `_known` only, so a stale slot can at most shorten the window.


def id_key(event_id: str) -> int:
    return hash(event_id)
