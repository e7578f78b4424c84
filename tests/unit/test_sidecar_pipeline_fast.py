"""The normalizer's accept-only fast path (`Normalizer.fast`) gives exactly the event of
the general path (`Normalizer.__call__`) whenever it accepts, and leaves every record
it is unsure of to the general path, which names the problem."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.canonical import canonical_bytes
from auditlock.sidecar.config import PipelineConfig
from auditlock.sidecar.pipeline import Pipeline
from auditlock.sidecar.pipeline.normalize import Normalizer, Rejected
from auditlock.sidecar.pipeline.recent_ids import RecentIds, id_key
from auditlock.sidecar.sources.forward.protocol import _decode_span_typed, pack_event_time
from auditlock.sidecar.sources.forward.reader import Entries

from .sidecar_records import IDENTITY, NS, records


def normalizers(prefix: str | None) -> tuple[Normalizer, Normalizer]:
    """Two normalizers in the same state: one for each path."""
    pair = []
    for _ in range(2):
        recent = RecentIds()
        recent.add([id_key("seen-1")])
        pair.append(Normalizer(IDENTITY, recent, prefix))
    fast, general = pair
    general._boot, general._boot_prefix = fast._boot, fast._boot_prefix
    return fast, general


@settings(max_examples=150, deadline=None)
@given(
    records(),
    st.sampled_from(["forward", "http", "config_files"]),
    st.sampled_from(["app.access", "app.data", "auditlock.operator.audit", "access_proxy"]),
    st.sampled_from([None, "auditlock.operator."]),
)
def test_the_fast_path_gives_the_general_paths_event_or_declines(
    record: dict[str, Any], input_name: str, tag: str, prefix: str | None
) -> None:
    fast, general = normalizers(prefix)
    # Known tags and seconds, as after earlier events of the same sender.
    for normalizer in (fast, general):
        with contextlib.suppress(Rejected):
            normalizer(input_name, tag, NS, {"action": "a", "actor": "x", "target": "t"})
    fast._counter = general._counter
    original = copy.deepcopy(record)
    got = fast.fast(input_name, tag, NS, record)
    assert record == original  # never changes the sender's record
    try:
        expected: dict[str, Any] | None = general(input_name, tag, NS, copy.deepcopy(record))
    except Rejected:
        expected = None
    if got is None:
        return
    assert expected is not None, "the fast path accepted a record the general path refuses"
    assert canonical_bytes(got) == canonical_bytes(expected)
    assert got == expected
    assert fast.sender_key == general.sender_key
    assert fast._counter == general._counter


def test_the_common_shape_takes_the_fast_path() -> None:
    fast, general = normalizers(None)
    record = {
        "action": "orders.read",
        "actor": {"kind": "user", "name": "alice@example.com", "ip": "10.0.0.7"},
        "target": {"resource": "orders", "namespace": "shop", "name": "o-1"},
        "outcome": "success",
        "request_id": "req-1",
        "n": 1,
        "details": {"method": "GET", "status": 200, "tags": ["a", {"b": None}]},
    }
    general("forward", "bench.access", NS, {"action": "a", "actor": "x", "target": "t"})
    fast("forward", "bench.access", NS, {"action": "a", "actor": "x", "target": "t"})
    got = fast.fast("forward", "bench.access", NS, record)
    assert got is not None
    assert got == general("forward", "bench.access", NS, record)
    # A sender-chosen id in an already seen canonical second, too.
    timed = {**record, "category": "access", "id": "evt-7", "time": got["time"]}
    assert fast.fast("http", "http", NS, timed) is not None
    assert fast.sender_key == id_key("evt-7")


def _without_assigned_ids(events: list[bytes], boot: str) -> list[Any]:
    parsed = [json.loads(event) for event in events]
    for event in parsed:
        if event["id"].startswith(boot + "-"):
            event["id"] = "assigned"
    return parsed


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), min_size=1, max_size=3), st.sampled_from(["app.access", "app.data"]))
def test_records_a_typed_decoder_read_need_fewer_checks_and_give_the_same_events(
    batch: list[dict[str, Any]], tag: str
) -> None:
    try:
        span = b"".join(msgpack.packb([pack_event_time(NS), r]) for r in batch)
    except (UnicodeEncodeError, TypeError, OverflowError):
        return  # not msgpack (a lone surrogate, an integer beyond 64 bits)
    typed = _decode_span_typed(tag, memoryview(span))
    if typed is None:
        return
    entries = Entries(typed)
    entries.checked = True
    pipelines = []
    for _ in range(2):
        pipelines.append(Pipeline(PipelineConfig(), IDENTITY, RecentIds()))
        pipelines[-1].process("forward", tag, NS, {"action": "a", "actor": "x", "target": "t"})
    checked, general = pipelines
    general.normalize_fast = lambda *args: None  # the general path only
    got = checked.process_all("forward", entries)
    expected = general.process_all("forward", list(typed))
    assert [(i, r.reason, str(r)) for i, r in got.rejected] == [
        (i, r.reason, str(r)) for i, r in expected.rejected
    ]
    assert _without_assigned_ids(got.events, checked.normalize._boot) == _without_assigned_ids(
        expected.events, general.normalize._boot
    )


def test_a_member_name_above_the_bmp_is_refused_on_the_checked_path_too() -> None:
    record = {"action": "a", "actor": "x", "target": "t", "details": {"\U0001f600": 1}}
    span = msgpack.packb([pack_event_time(NS), record])
    typed = _decode_span_typed("app.access", memoryview(span))
    assert typed is not None
    entries = Entries(typed)
    entries.checked = True
    out = Pipeline(PipelineConfig(), IDENTITY).process_all("forward", entries)
    assert out.events == [] and [r.field for _, r in out.rejected] == ["details.\U0001f600"]
