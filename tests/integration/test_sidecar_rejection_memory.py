"""Rejections must not amplify: a message of millions of invalid entries, within
`max_frame_bytes` / `max_body_bytes`, is refused with a bounded answer, and the collector's
peak RSS (VmHWM of the real process) stays under the container's 128 MiB memory limit.

Each case goes to a real collector process. The process also runs under a 1 GiB
address-space limit, so a regression fails with a MemoryError in the collector instead of
taking the test machine's memory. After the hostile input, a valid event is acknowledged,
and the verified ledger holds exactly that one event: nothing refused was stored.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.hostile_intake import (
    FRAME,
    Case,
    forward_cases,
    forward_exchange,
    http_cases,
    peak_rss_mib,
    post,
)
from tests.servers.sidecar import (
    SidecarProcess,
    module_collector,
    stored_ledger,
)

LIMIT_MIB = 128
# Messages of tiny invalid entries: memory does not grow with their number, CPU does
# (linearly); a quarter of the limit keeps the test short.
# bench/bench_sidecar_rejections.py runs the full 8 MiB.
DENSE = FRAME // 4


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    with module_collector(tmp_path_factory.mktemp("rejections")) as proc:
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (1 << 30, 1 << 30))
        yield proc


def rejected(proc: SidecarProcess, reason: str) -> float:
    total = 0.0
    for line in proc.metrics().splitlines():
        if line.startswith("auditlock_sidecar_events_rejected_total{") and f'"{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("case", forward_cases(DENSE), ids=lambda case: case.name)
def test_forward_message_of_invalid_entries_is_rejected_in_bounded_memory(
    collector: SidecarProcess, case: Case
) -> None:
    assert len(case.payload) <= FRAME
    before = rejected(collector, case.reason)
    # The chunk is acknowledged: its entries were all refused one by one (Forward has
    # no per-event nack), and each is counted.
    assert forward_exchange(collector.forward_port, case.payload) == [{"ack": case.answer}]
    assert rejected(collector, case.reason) - before == case.refused
    peak = peak_rss_mib(collector.pid)
    assert peak < LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


@pytest.mark.parametrize("case", http_cases(DENSE), ids=lambda case: case.name)
def test_http_body_of_invalid_events_is_refused_in_bounded_memory(
    collector: SidecarProcess, case: Case
) -> None:
    assert len(case.payload) <= FRAME
    code, answer = post(collector.http_port, case.payload)
    assert code == case.answer, answer[:300]
    count = case.refused
    assert len(answer) < 64 * 1024, f"{len(answer)}-byte answer"
    payload = json.loads(answer)
    if count is None:
        assert "fewer events per request" in payload["error"]
    else:
        assert payload["error"].startswith(f"{count} invalid event(s), nothing stored")
        assert len(payload["errors"]) == 100
        assert payload["more_errors"] == count - 100
        assert payload["reasons"] == {"missing_field": count}
    peak = peak_rss_mib(collector.pid)
    assert peak < LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


def test_after_the_hostile_input_only_the_valid_event_is_in_the_ledger(
    collector: SidecarProcess, tmp_path: Path
) -> None:
    code, answer = post(
        collector.http_port,
        json.dumps({"category": "access", "action": "read", "actor": "ok", "target": "t"}).encode(),
    )
    assert code == 202, answer
    assert collector.terminate() == 0
    assert [e["actor"]["name"] for e in stored_ledger(collector.config).events] == ["ok"]
