"""Redaction: replace configured dotted field paths with a marker before spooling.

Redaction happens before the event is hashed, so the trail never holds the value; the
marker records that something was there. Paths address the normalized event, e.g.
`details.password` or `actor.name` (policy/paths.py says which paths a policy may name).
"""

from __future__ import annotations

from typing import Any

MARKER = "[REDACTED]"


class Redactor:
    def __init__(self, paths: list[str]) -> None:
        self._paths = [tuple(p.split(".")) for p in paths if p]

    def __bool__(self) -> bool:
        return bool(self._paths)

    def apply(self, event: dict[str, Any]) -> int:
        """Redact in place; returns how many fields were replaced.

        Nested objects are copied before they are changed (copy on write): some are
        shared between events (the sidecar's own `source`, `details.intake`).
        """
        count = 0
        for parts in self._paths:
            parent: dict[str, Any] = event
            found = True
            for part in parts[:-1]:
                child = parent.get(part)
                if type(child) is not dict:
                    found = False
                    break
                child = dict(child)
                parent[part] = child
                parent = child
            if found and parts[-1] in parent:
                parent[parts[-1]] = MARKER
                count += 1
        return count
