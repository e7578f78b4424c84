"""Alertmanager API v2: `POST /api/v2/alerts` with a list of postable alerts.

Firing alerts carry `endsAt` a few minutes ahead and are resent while they fire;
resolution sends the same labels with `endsAt` now, which Alertmanager turns into a
resolved notification (its receivers' `send_resolved`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import aiohttp
import orjson

from auditlock.alerts.engine import Transition
from auditlock.alerts.receivers import ReceiverError
from auditlock.alerts.receivers.wire import alert_json


class AlertmanagerReceiver:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.name = "alertmanager"
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def send(self, batch: Sequence[Transition]) -> None:
        now = time.time()
        body = orjson.dumps([alert_json(t.alert, now) for t in batch])
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise ReceiverError(f"{self.url} answered {response.status}: {text}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReceiverError(f"{self.url} unreachable: {exc!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
