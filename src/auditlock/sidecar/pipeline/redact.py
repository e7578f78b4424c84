"""Redaction: replace configured dotted field paths with a marker before spooling.

Redaction happens before the event is hashed, so the trail never holds the value; the
marker records that something was there. Paths address the normalized event, e.g.
`attributes.password` or `actor.email`.
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
        """Redact in place; returns how many fields were replaced."""
        count = 0
        for parts in self._paths:
            node: Any = event
            for part in parts[:-1]:
                node = node.get(part) if type(node) is dict else None
                if node is None:
                    break
            if type(node) is dict and parts[-1] in node:
                node[parts[-1]] = MARKER
                count += 1
        return count
