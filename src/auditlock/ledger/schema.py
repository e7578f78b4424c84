"""Print the event JSON Schema: `python -m auditlock.ledger.schema > docs/event-schema.json`."""

from __future__ import annotations

import json
import sys

from auditlock.ledger.event import event_json_schema


def render() -> str:
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
