"""Alertmanager API v2: `POST /api/v2/alerts` with a list of postable alerts.

Firing alerts carry `endsAt` a few minutes ahead and are resent while they fire;
resolution sends the same labels with `endsAt` now, which Alertmanager turns into a
resolved notification (its receivers' `send_resolved`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson

from auditlock.alerts.engine import Transition
from auditlock.alerts.receivers import ReceiverError
from auditlock.alerts.receivers.post import PostError, check_url, post
from auditlock.alerts.receivers.wire import alert_json


class AlertmanagerReceiver:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.name = "alertmanager"
        self.url = url.rstrip("/") + "/api/v2/alerts"
        check_url(self.url)
        self.timeout = timeout

    async def send(self, batch: Sequence[Transition]) -> None:
        now = time.time()
        body = orjson.dumps([alert_json(t.alert, now) for t in batch])
        try:
            async with asyncio.timeout(self.timeout):
                status, answer = await post(self.url, body, {"Content-Type": "application/json"})
        except (PostError, OSError, TimeoutError) as exc:
            raise ReceiverError(f"{self.url} unreachable: {exc!r}") from None
        if status != 200:
            text = answer[:200].decode("utf-8", "replace")
            raise ReceiverError(f"{self.url} answered {status}: {text}")

    async def close(self) -> None:
        return None
