"""Events an app sends must not be confusable with what auditlock observed, on a real
collector process: integers beyond +-(2**53 - 1) are refused whatever their size (JSON
literals beyond 64 bits included), an id repeated within the stream is refused (and one
from a refused batch can be used again), and an app event that claims an observer's
identity (the config watcher's actor or tag, the proxy's or the operator's marks, a
Kubernetes API audit event's shape) is refused. At the end the verified ledger holds
exactly the accepted events. `auditlock sidecar --check` does not print the shared key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.helpers.forward import first_answer
from tests.servers import hostile_intake
from tests.servers.auditlock_child import run_auditlock
from tests.servers.sidecar import (
    SidecarProcess,
    make_config,
    module_collector,
    stored_ledger,
)

T = 1_764_428_645
ACCEPTED: list[str] = []  # ids of the events each test saw accepted, in order


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with module_collector(tmp_path_factory.mktemp("hostile-events")) as proc:
        yield proc


def event(event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"category": "access", "action": "read", "actor": "app-user"}
    body["target"] = "orders"
    if event_id is not None:
        body["id"] = event_id
    body.update(extra)
    return body


def post_raw(port: int, body: bytes) -> tuple[int, dict[str, Any]]:
    code, answer = hostile_intake.post(port, body, timeout=30)
    return code, json.loads(answer)


def post(port: int, payload: Any) -> tuple[int, dict[str, Any]]:
    return post_raw(port, json.dumps(payload).encode())


def forward(port: int, tag: str, records: list[dict[str, Any]], chunk: str) -> Any:
    """Forward mode with a chunk: the sidecar acks once the accepted ones are durable."""
    frame = msgpack.packb([tag, [[T, r] for r in records], {"chunk": chunk}])
    return first_answer(port, frame, timeout=30)


def rejected(proc: SidecarProcess, input_name: str, reason: str) -> float:
    prefix = f'auditlock_sidecar_events_rejected_total{{input="{input_name}",reason="{reason}"}}'
    for line in proc.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    "literal", ["18446744073709551616", "123456789012345678901234567890", "9007199254740993"]
)
def test_integers_beyond_the_safe_range_are_refused_whatever_their_size(
    collector: SidecarProcess, literal: str
) -> None:
    body = json.dumps(event(details={"n": 0})).replace('"n": 0', f'"n": {literal}').encode()
    code, answer = post_raw(collector.http_port, body)
    assert code == 400, answer
    assert answer["errors"][0]["field"] == "details.n"
    assert "integer outside" in answer["errors"][0]["message"]
    # The same over Forward: msgpack integers stop at 64 bits; beyond 2**53 is refused.
    before = rejected(collector, "forward", "bad_value")
    assert forward(collector.forward_port, "app.access", [event(n=2**64 - 1)], f"c-{literal}") == {
        "ack": f"c-{literal}"
    }
    assert rejected(collector, "forward", "bad_value") == before + 1


def test_an_id_repeated_within_the_stream_is_refused(collector: SidecarProcess) -> None:
    port = collector.http_port
    assert post(port, event("order-1"))[0] == 202
    ACCEPTED.append("order-1")
    code, answer = post(port, event("order-1"))
    assert code == 400 and answer["errors"][0]["reason"] == "duplicate_id", answer
    # Twice in one request: the second is refused, nothing of the request is stored.
    code, answer = post(port, [event("order-2"), event("order-2")])
    assert code == 400, answer
    assert [(e["index"], e["reason"]) for e in answer["errors"]] == [(1, "duplicate_id")]
    # A refused request's ids are not remembered: the corrected batch goes in.
    code, answer = post(port, [event("order-3"), event("order-4", outcome="maybe")])
    assert code == 400 and answer["errors"][0]["field"] == "outcome", answer
    assert post(port, [event("order-3"), event("order-4")])[0] == 202
    ACCEPTED.extend(["order-3", "order-4"])
    # Over Forward (no per-event nack): the repeat is refused and counted, the rest stored;
    # also across the two intakes.
    before = rejected(collector, "forward", "duplicate_id")
    records = [event("order-5"), event("order-5"), event("order-1"), event("order-6")]
    assert forward(collector.forward_port, "app.access", records, "c-dup") == {"ack": "c-dup"}
    assert rejected(collector, "forward", "duplicate_id") == before + 2
    ACCEPTED.extend(["order-5", "order-6"])


CLAIMS = [
    pytest.param("app.access", event("claim-1", actor="auditlock-config-watcher"), id="watcher"),
    pytest.param(
        "app.access",
        event("claim-2", actor={"kind": "system", "name": "auditlock-config-watcher"}),
        id="watcher-system",
    ),
    pytest.param("config_files.configuration", event("claim-3"), id="watcher-tag"),
    pytest.param("access_proxy.access", event("claim-4"), id="proxy-tag"),
    pytest.param("app.access", event("claim-5", identity_verified=True), id="proxy-marks"),
    pytest.param("auditlock.operator.audit", event("claim-6"), id="operator-tag"),
    pytest.param(
        "app.access",
        event("claim-7", details={"observed_by": "kube-apiserver-audit", "verb": "get"}),
        id="api-audit-observed-by",
    ),
    pytest.param("app.access", event("k8s-audit-1234"), id="api-audit-id"),
    pytest.param(
        "app.access",
        event("claim-8", auditID="1234", stage="ResponseComplete", requestURI="/api"),
        id="api-audit-shape",
    ),
]


@pytest.mark.parametrize(("tag", "record"), CLAIMS)
def test_app_events_claiming_an_observer_identity_are_refused(
    collector: SidecarProcess, tag: str, record: dict[str, Any]
) -> None:
    before = rejected(collector, "forward", "reserved_identity")
    chunk = f"c-{record['id']}"
    assert forward(collector.forward_port, tag, [record], chunk) == {"ack": chunk}
    assert rejected(collector, "forward", "reserved_identity") == before + 1
    if not tag.startswith("app."):
        return  # HTTP has no tag of the sender's choosing
    code, answer = post(collector.http_port, record)
    assert code == 400 and answer["errors"][0]["reason"] == "reserved_identity", answer


def test_only_the_accepted_events_are_in_the_verified_ledger(collector: SidecarProcess) -> None:
    assert collector.terminate() == 0
    assert [e["id"] for e in stored_ledger(collector.config).events] == ACCEPTED


def test_check_does_not_print_the_shared_key(tmp_path: Path) -> None:
    config = make_config(tmp_path, sources={"forward": {"shared_key": "s3cret-forward-key"}})
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(config))
    result = run_auditlock("sidecar", "--config", str(path), "--check", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "s3cret-forward-key" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["sources"]["forward"]["shared_key"] == "(set, not shown)"
