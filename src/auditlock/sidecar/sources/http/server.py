"""JSON over HTTP on loopback: `POST /v1/events`.

Body: one JSON object, a JSON array of objects, or NDJSON (one object per line).
Answers:

    202 {"accepted": n, "filtered": k}      durable in the spool (fsynced)
    400 {"error": ..., "errors": [{"index", "field", "reason", "message"}]}
                                            nothing stored; fix the events and resend all;
                                            at most 100 errors are listed, then
                                            "more_errors": n and "reasons": {reason: n}
    413                                     body larger than sources.http.max_body_bytes,
                                            too dense to decode at once (body.py),
                                            or its events larger than the whole spool
    503 + Retry-After                       spool full or shutting down; retry later

All-or-nothing per request: a client that gets 400 can resend the corrected batch without
creating duplicates.

Retries without duplicates: a request may carry an `Idempotency-Key` header (1-255
visible ASCII characters, unique per batch, e.g. a UUID). The spool remembers the key
with the events, like a Forward chunk id, across restarts and for the last
`sources.forward.chunk_memory` keys. A request whose key is already durable stores
nothing and answers `202 {"accepted": 0, "filtered": 0, "duplicate": true}`; one whose
key another request is committing right now waits for that commit. So a client that
lost a 202 (timeout, connection reset, sidecar restart) resends the same batch with
the same key and the trail holds it once. Without the header, a resend is stored again.

Tag: the events are tagged `http` (recorded in details.intake), or what an
`X-Auditlock-Tag` header says (1-128 visible ASCII characters). Tags are checked like a
Forward tag's: those reserved for auditlock's observers are refused, except under
`sources.forward.observer_tag_prefix` on the operator's own collector, where the
operator hands over its cluster capture this way (pipeline/observers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import orjson

from auditlock.sidecar.http_server import HttpListener, Request, Response
from auditlock.sidecar.intake import REQUEST, Processed, RecordTooLarge, SpoolFull
from auditlock.sidecar.pipeline import MESSAGE_EVENT_BYTES
from auditlock.sidecar.sources import SourceContext
from auditlock.sidecar.sources.http.body import BadBody, TooDense, parse_body
from auditlock.sidecar.sources.http.config import HttpSource
from auditlock.sidecar.spool.chunk_ids import http_key

log = logging.getLogger("auditlock.sidecar.http")

INPUT = "http"
TAG = "http"
RETRY_AFTER_SECONDS = 1
IDEMPOTENCY_HEADER = "idempotency-key"
TAG_HEADER = "x-auditlock-tag"
BATCH = 1024  # events prepared between two turns of the event loop
# A body at least this long is decoded, prepared and committed in its turn, one such
# request at a time: each may take the decode budget (body.py) and 16 MiB of events, and
# other requests run between its batches (6 requests of 700 KB decoding to ~32 MiB
# each, at once: 148 MiB peak RSS). Shorter bodies go at once.
TURN_BODY_BYTES = 256 * 1024
_NO_TURN = contextlib.nullcontext()


def idempotency_chunk(headers: dict[str, str]) -> str | None:
    """The spool chunk key for the request's Idempotency-Key, None without one (its own
    namespace: a Forward chunk id never equals it, spool/chunk_ids.py)."""
    key = headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 0 < len(key) < 256 or not all("!" <= c <= "~" for c in key):
        raise BadBody("Idempotency-Key must be 1-255 visible ASCII characters (e.g. a UUID)")
    return http_key(key)


def request_tag(headers: dict[str, str]) -> str:
    """The tag of the request's events: `X-Auditlock-Tag`, else `http`."""
    tag = headers.get(TAG_HEADER)
    if tag is None:
        return TAG
    if not 0 < len(tag) <= 128 or not all("!" <= c <= "~" for c in tag):
        raise BadBody("X-Auditlock-Tag must be 1-128 visible ASCII characters")
    return tag


class HttpIntake(HttpListener):
    def __init__(self, config: HttpSource, context: SourceContext) -> None:
        self.intake = intake = context.intake
        super().__init__(
            config,
            {("POST", "/v1/events"): self.post_events},
            name="http intake",
            listener=INPUT,
            metrics=intake.metrics,
            body_timeout=config.body_timeout_seconds,
            log=log,
            what="http intake listening",
            max_body_bytes=config.max_body_bytes,
        )
        self._turn = asyncio.Lock()  # of the requests with long bodies

    async def post_events(self, request: Request) -> Response:
        async with self._turn if len(request.body) >= TURN_BODY_BYTES else _NO_TURN:
            return await self._post_events(request)

    async def _post_events(self, request: Request) -> Response:
        body = request.body
        self.intake.metrics.bytes_in.labels(INPUT).inc(len(body))
        try:
            chunk = idempotency_chunk(request.headers)
        except BadBody as exc:
            self.intake.metrics.events_rejected.labels(INPUT, "bad_idempotency_key").inc()
            return _json(400, {"error": str(exc), "errors": []})
        try:
            tag = request_tag(request.headers)
        except BadBody as exc:
            self.intake.metrics.events_rejected.labels(INPUT, "bad_tag").inc()
            return _json(400, {"error": str(exc), "errors": []})
        now = time.time_ns()
        prepared = Processed()
        try:
            # Items are decoded as the pipeline takes them (NDJSON line by line), in
            # batches with the event loop free in between: a body can hold millions.
            items = parse_body(body)
            event_bytes = 0
            while batch := [(tag, now, item) for item in itertools.islice(items, BATCH)]:
                part = self.intake.prepare(INPUT, batch, count=False)
                prepared.extend(part, prepared.seen)
                prepared.seen += len(batch)
                event_bytes += sum(map(len, part.events))
                if event_bytes > MESSAGE_EVENT_BYTES:
                    raise TooDense(
                        f"the request's events take more than {MESSAGE_EVENT_BYTES} bytes as "
                        "ledger lines: send fewer events per request"
                    )
                await asyncio.sleep(0)
        except BadBody as exc:
            self.intake.metrics.events_rejected.labels(INPUT, "bad_json").inc()
            return _json(400, {"error": str(exc), "errors": []})
        except TooDense as exc:
            self.intake.metrics.events_rejected.labels(INPUT, "too_large").inc()
            return _json(413, {"error": str(exc), "errors": []})
        try:
            committed = await self.intake.commit(INPUT, [(prepared, chunk)], REQUEST)
        except RecordTooLarge as exc:
            self.intake.metrics.events_rejected.labels(INPUT, "too_large_for_spool").inc(
                len(prepared.events)
            )
            return _json(413, {"error": str(exc), "errors": []})
        except SpoolFull as exc:
            return _unavailable(str(exc))
        if committed.refused is not None:
            return _json(400, _rejections(committed.refused))
        if committed.duplicates:
            self.intake.metrics.duplicate_requests.inc()
            return _json(202, {"accepted": 0, "filtered": 0, "duplicate": True})
        return _json(202, {"accepted": committed.stored, "filtered": prepared.filtered})


def _rejections(prepared: Processed) -> dict[str, Any]:
    """The 400 answer: the first REPORTED_REJECTIONS errors, a count of the rest."""
    errors = [
        {"index": index, "field": exc.field, "reason": exc.reason, "message": str(exc)}
        for index, exc in prepared.rejected
    ]
    first = errors[0]
    answer: dict[str, Any] = {
        "error": f"{prepared.rejected_count} invalid event(s), nothing stored; first: event "
        f"{first['index']} field {first['field']}: {first['message']}",
        "errors": errors,
    }
    if prepared.rejected_count > len(errors):
        answer["more_errors"] = prepared.rejected_count - len(errors)
        answer["reasons"] = prepared.rejected_reasons
    return answer


def _unavailable(reason: str) -> Response:
    return _json(
        503,
        {"error": f"{reason}; retry after {RETRY_AFTER_SECONDS}s"},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(payload), "application/json", headers or {})
