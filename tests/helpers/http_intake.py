"""The collector's HTTP intake from a test's side: an event, a POST, waiting for the
stored trail to hold what was sent."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from email.message import Message
from typing import Any

from tests.servers.sidecar import SidecarProcess, ledger_events, open_store


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "category": "data",
        "action": "delete",
        "outcome": "success",
        "actor": {"kind": "user", "name": "bob", "ip": "10.0.0.9"},
        "target": {"resource": "invoices", "name": f"inv-{n}"},
        "request_id": f"req-{n}",
        **extra,
    }


def padded(n: int, pad: int) -> dict[str, Any]:
    """A record numbered `n` that carries `pad` bytes of padding: for filling a spool."""
    return {"category": "data", "action": "write", "actor": "a", "target": "t", "n": n,
            "pad": "p" * pad}  # fmt: skip


def post_bytes(
    port: int, body: bytes, *, key: str | None = None, timeout: float = 10
) -> tuple[int, bytes, Message]:
    """POST `body` to the collector's /v1/events: the status, body and headers of its
    answer (an error status is an answer too)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events", body, headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def post(port: int, body: Any, key: str | None = None) -> tuple[int, dict[str, Any]]:
    status, answer, _ = post_bytes(port, json.dumps(body).encode(), key=key)
    return status, json.loads(answer)


def wait_until_shipped(sidecar: SidecarProcess, events: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    store = open_store(sidecar.config["destination"]["url"])
    while time.monotonic() < deadline:
        if len(ledger_events(store)) >= events:
            return
        time.sleep(0.1)
    raise AssertionError(f"{events} events not shipped after {timeout}s")
