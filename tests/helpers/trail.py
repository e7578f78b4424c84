"""Reading a trail stored on file:// by a collector, the way a test looks at it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def stored_events(store: Path) -> list[dict[str, Any]]:
    """The events of every (uncompressed) segment below `store`, in file-name order."""
    events = []
    for segment in sorted(store.glob("streams/*/*/seg-*.jsonl")):
        for line in segment.read_bytes().splitlines():
            events.append(json.loads(line)["event"])
    return events
