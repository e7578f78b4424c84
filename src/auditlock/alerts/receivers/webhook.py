"""A generic webhook: JSON POST signed with HMAC-SHA256.

The body is `{"version": "1", "alerts": [...]}`, each alert as Alertmanager would get
it plus `status` (firing or resolved), `fingerprint` and `rule`. Headers:

    X-Auditlock-Timestamp: <unix seconds>
    X-Auditlock-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

The timestamp is signed with the body, so a receiver that refuses old timestamps cannot
be fed a recorded delivery again (`verify_signature`, docs/alerts.md "Webhook").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence

import orjson

from auditlock.alerts.engine import Transition
from auditlock.alerts.receivers import ReceiverError
from auditlock.alerts.receivers.post import PostError, check_url, post
from auditlock.alerts.receivers.wire import alert_json

SIGNATURE_HEADER = "X-Auditlock-Signature"
TIMESTAMP_HEADER = "X-Auditlock-Timestamp"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, header: str, *, max_age: float = 300.0
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        age = abs(time.time() - float(timestamp))
    except ValueError:
        return False
    return age <= max_age and hmac.compare_digest(signature(secret, timestamp, body), header)


class WebhookReceiver:
    def __init__(self, url: str, secret: bytes, *, timeout: float = 5.0) -> None:
        if not secret:
            raise ValueError("a webhook needs a non-empty signing secret")
        self.name = "webhook"
        self.url = url
        check_url(url)
        self._secret = secret
        self.timeout = timeout

    def body(self, batch: Sequence[Transition], now: float) -> bytes:
        alerts = []
        for t in batch:
            item = alert_json(t.alert, now)
            item["status"] = "resolved" if t.alert.resolved else "firing"
            item["fingerprint"] = t.alert.fingerprint
            item["rule"] = t.alert.rule
            item["events"] = [r.as_dict() for r in t.alert.events]
            alerts.append(item)
        return orjson.dumps({"version": "1", "alerts": alerts})

    async def send(self, batch: Sequence[Transition]) -> None:
        now = time.time()
        body = self.body(batch, now)
        timestamp = str(int(now))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._secret, timestamp, body),
        }
        try:
            async with asyncio.timeout(self.timeout):
                status, _ = await post(self.url, body, headers)
        except (PostError, OSError, TimeoutError) as exc:
            raise ReceiverError(f"{self.url} unreachable: {exc!r}") from None
        if status >= 300:
            raise ReceiverError(f"{self.url} answered {status}")

    async def close(self) -> None:
        return None
