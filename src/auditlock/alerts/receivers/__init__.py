"""Where alerts go: one module per receiver, each an async `send(batch)` that raises
`ReceiverError` on failure (the dispatcher retries). Alertmanager (`alertmanager.py`),
a signed generic webhook (`webhook.py`) and the trail itself (`trail.py`); Kubernetes
Events live with the operator's API client (operator/alert_events.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from auditlock.alerts.engine import Transition


class ReceiverError(Exception):
    """A delivery failed; the message says where and why."""


class Receiver(Protocol):
    name: str

    async def send(self, batch: Sequence[Transition]) -> None: ...

    async def close(self) -> None: ...
