"""Records decoded into the collector's record structs (typed_records.py) become exactly
the events of the general path, with the same rejections, and the ledger's pydantic model
stores those events as the same bytes; spans the structs do not fit are left to the
other decoders."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.event import validate_event
from auditlock.sidecar.config import MatchRule, PipelineConfig
from auditlock.sidecar.pipeline import Pipeline, Processed, Rejected
from auditlock.sidecar.pipeline.recent_ids import RecentIds, id_key
from auditlock.sidecar.pipeline.typed_records import MAX_EXTRAS, RecordTypes, TypedRecords
from auditlock.sidecar.sources.forward.protocol import (
    MAX_ENTRY_BYTES,
    _decode_span,
    _decode_span_records,
    _entry_array,
    pack_event_time,
    packed_entries,
)

from .ledger_strategies import ips, json_values, names, short, times
from .sidecar_records import IDENTITY, NS, SEEN_SECOND, records

CONFIGS = [
    PipelineConfig(),
    PipelineConfig(redact=["details.n", "actor.name", "correlation.request_id"]),
    PipelineConfig(
        categories=["access"],
        include=[MatchRule("outcome", ["success", "unknown"])],
        exclude=[MatchRule("details.k", ["1"])],
    ),
]
COMMON = {
    "action": "orders.read",
    "actor": {"kind": "user", "name": "alice@example.com", "ip": "10.0.0.7"},
    "target": {"resource": "orders", "namespace": "shop", "name": "o-1"},
    "outcome": "success",
    "request_id": "req-1",
    "details": {"method": "GET", "status": 200, "tags": ["a", {"b": None}]},
}


def maybe(draw: Any, record: dict[str, Any], key: str, strategy: Any) -> None:
    if draw(st.booleans()):
        record[key] = draw(strategy)


@st.composite
def typable_records(draw: Any) -> dict[str, Any]:
    """Records whose members all have the types the record structs accept, varied in
    everything the normalizer still decides: tags' categories, nulls, ids (new, seen,
    reserved), times (canonical or not), addresses, reserved identities, flat members
    (also under the names of known or reserved members), any text."""
    record: dict[str, Any] = {"action": draw(short)}
    maybe(draw, record, "category", st.sampled_from(["access", "data", None]))
    maybe(draw, record, "outcome", st.sampled_from(["success", "failure", "unknown"]))
    actor: dict[str, Any] = {
        "name": draw(st.one_of(short, st.sampled_from(["auditlock-collector"])))
    }
    maybe(draw, actor, "kind", st.sampled_from(["user", "system", "serviceaccount"]))
    maybe(draw, actor, "ip", st.one_of(ips, st.none(), st.sampled_from(["::FFFF:1.2.3.4", "x"])))
    record["actor"] = draw(st.one_of(st.just(actor), short))
    target: dict[str, Any] = {"resource": draw(short)}
    maybe(draw, target, "namespace", short)
    maybe(draw, target, "name", short)
    record["target"] = draw(st.one_of(st.just(target), short))
    maybe(draw, record, "request_id", st.one_of(short, st.none()))
    maybe(draw, record, "trace_id", st.one_of(short, st.none()))
    maybe(
        draw,
        record,
        "correlation",
        st.one_of(
            st.none(),
            st.fixed_dictionaries({}, optional={"request_id": short, "trace_id": short}),
        ),
    )
    maybe(draw, record, "details", st.one_of(st.none(), st.dictionaries(names, json_values)))
    flat = st.one_of(names, st.sampled_from(["n", "intake", "observed_by", "stage", "source"]))
    for _ in range(draw(st.integers(0, 3))):
        record[draw(flat)] = draw(json_values)
    maybe(
        draw,
        record,
        "id",
        st.one_of(
            st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,20}\Z"),
            st.sampled_from(["k8s-audit-1", "seen-1", "a b", ""]),
        ),
    )
    maybe(draw, record, "time", st.one_of(st.just(SEEN_SECOND + "000000001Z"), times()))
    return record


def span_of(batch: list[Any]) -> memoryview | None:
    try:
        return memoryview(b"".join(msgpack.packb([pack_event_time(NS), r]) for r in batch))
    except (UnicodeEncodeError, TypeError, OverflowError):
        return None  # not msgpack (a lone surrogate, an integer beyond 64 bits)


def decode(tag: str, span: memoryview, types: RecordTypes) -> list[TypedRecords] | None:
    array = _entry_array(span)
    assert array is not None
    return _decode_span_records(tag, span, array, types)


def pipelines(config: PipelineConfig, tag: str) -> tuple[Pipeline, Pipeline]:
    """Two pipelines in the same state (ids seen, tags and seconds known), the second
    one held to the general path."""
    pair = []
    for _ in range(2):
        recent = RecentIds()
        recent.add([id_key("seen-1")])
        pipeline = Pipeline(config, IDENTITY, recent)
        with contextlib.suppress(Rejected):
            pipeline.process("forward", tag, NS, {"action": "a", "actor": "x", "target": "t"})
        pair.append(pipeline)
    typed, general = pair
    general.normalize._boot = typed.normalize._boot
    general.normalize._boot_prefix = typed.normalize._boot_prefix
    general.normalize._counter = typed.normalize._counter
    general.normalize_fast = lambda *args: None
    return typed, general


def without_assigned_ids(events: list[bytes], boot: str) -> list[Any]:
    parsed = [json.loads(event) for event in events]
    for event in parsed:
        if event["id"].startswith(boot + "-"):
            event["id"] = "assigned"
    return parsed


def both_paths(
    typed_batches: list[TypedRecords], config: PipelineConfig, tag: str
) -> tuple[Processed, Processed, str]:
    typed, general = pipelines(config, tag)
    got = Processed()
    entries = []
    for batch in typed_batches:
        got.extend(typed.process_all("forward", batch), len(entries))
        entries += [(tag, batch.time_ns(i), batch.general(i)) for i in range(len(batch))]
    expected = general.process_all("forward", entries)
    return got, expected, typed.normalize._boot


@settings(max_examples=75, deadline=None)
@given(
    st.lists(st.one_of(typable_records(), records()), min_size=1, max_size=4),
    st.sampled_from(["app.access", "app.data", "app.x", "auditlock.x"]),
    st.sampled_from(range(len(CONFIGS))),
)
def test_typed_records_give_the_general_paths_events_and_the_models_bytes(
    batch: list[dict[str, Any]], tag: str, config: int
) -> None:
    span = span_of(batch)
    if span is None:
        return
    typed_batches = decode(tag, span, RecordTypes())
    if typed_batches is None:
        return
    got, expected, boot = both_paths(typed_batches, CONFIGS[config], tag)
    assert [(i, r.reason, r.field, str(r)) for i, r in got.rejected] == [
        (i, r.reason, r.field, str(r)) for i, r in expected.rejected
    ]
    assert got.filtered == expected.filtered
    assert without_assigned_ids(got.events, boot) == without_assigned_ids(expected.events, boot)
    assert [(k, e, i) for k, e, i in got.ids] == [(k, e, i) for k, e, i in expected.ids]
    for line in got.events:
        # The ledger's pydantic model accepts the event and stores the same bytes.
        assert canonical_bytes(validate_event(json.loads(line))) == line


def test_the_common_shape_takes_the_typed_path_and_learns_flat_members() -> None:
    types = RecordTypes()
    flat = [{**COMMON, "n": n, "user-agent": "curl/8"} for n in range(3)]
    span = span_of(flat)
    assert span is not None
    typed_batches = decode("app.access", span, types)
    assert typed_batches is not None and [len(b) for b in typed_batches] == [3]
    assert sorted(name for _, name in types.extras) == ["n", "user-agent"]
    got, expected, _ = both_paths(typed_batches, PipelineConfig(), "app.access")
    assert got.events and got.events == expected.events  # all assigned ids, in order
    assert json.loads(got.events[0])["details"]["user-agent"] == "curl/8"
    # Decoded by the same types again: nothing more to learn.
    extras = types.extras
    assert decode("app.access", span, types) is not None and types.extras is extras


def test_spans_the_record_types_leave_to_the_other_decoders() -> None:
    others = [
        {**COMMON, "outcome": None},  # null where null is not "absent"
        {**COMMON, "actor": {"name": "a", "role": "x"}},  # an actor member no event has
        {**COMMON, "details": {"x": 1.5}},  # a float: the general path turns it into text
        {**COMMON, "n": b"raw"},
        {k: v for k, v in COMMON.items() if k != "action"},
    ]
    for record in others:
        span = span_of([COMMON, record])
        assert span is not None
        assert decode("app.access", span, RecordTypes()) is None
        # ... and the whole span still arrives, by the typed maps or entry by entry.
        assert sum(map(len, _decode_span("app.access", span))) == 2


def test_stamps_other_than_a_fixext8_event_time_are_left_to_the_other_decoders() -> None:
    record = msgpack.packb(COMMON)
    good = msgpack.packb(pack_event_time(NS))
    ext8 = b"\xc7\x08\x00" + good[2:]  # the same EventTime in the longer ext 8 form
    late = b"\xd7\x00" + good[2:6] + (10**9).to_bytes(4, "big")  # nanoseconds >= 1 s
    for stamp, readable in ((ext8, True), (late, False), (b"\x05", True)):
        span = memoryview(b"\x92" + good + record + b"\x92" + stamp + record)
        assert decode("app.access", span, RecordTypes()) is None
        if readable:  # the typed maps read it (and time_to_ns any stamp)
            assert sum(map(len, _decode_span("app.access", span))) == 2
    span = memoryview(b"\x92" + good + record)
    batches = decode("app.access", span, RecordTypes())
    assert batches is not None and batches[0].time_ns(0) == NS


def test_a_blob_of_many_spans_gives_every_entry_in_order() -> None:
    """A blob longer than MAX_ENTRY_BYTES is cut into spans by a scout that counts their
    entries for the one-call decoders; an entry over the limit is not decoded."""
    records = [{**COMMON, "n": n, "pad": "x" * 900} for n in range(700)]
    big = {**COMMON, "n": -1, "pad": "y" * MAX_ENTRY_BYTES}
    entries = [[pack_event_time(NS + n), r] for n, r in enumerate(records)]
    entries.insert(350, [pack_event_time(NS), big])
    blob = b"".join(msgpack.packb(entry) for entry in entries)
    got: list[Any] = []
    for batch in packed_entries("app.access", blob):
        if type(batch) is TypedRecords:
            got += [(batch.time_ns(i), batch.general(i)) for i in range(len(batch))]
        else:
            got += [(t, r if isinstance(r, dict) else "oversized") for _, t, r in batch]
    expected = [(NS + n, r) for n, r in enumerate(records)]
    expected.insert(350, (0, "oversized"))
    assert got == expected


def test_flat_member_names_are_learned_up_to_a_bound_then_spans_back_off() -> None:
    types = RecordTypes()
    many = {**COMMON, **{f"m{n}": n for n in range(MAX_EXTRAS)}}
    span = span_of([many])
    assert span is not None and decode("app.access", span, types) is not None
    one_more = span_of([{**COMMON, "another": 1}])
    assert one_more is not None
    assert decode("app.access", one_more, types) is None
    # Declined spans back off: the next two are not tried, then one is (and fits).
    assert decode("app.access", span, types) is None
    assert decode("app.access", span, types) is None
    assert decode("app.access", span, types) is not None


def test_a_record_left_to_the_general_path_keeps_its_place() -> None:
    batch = [COMMON, {**COMMON, "time": "2025-11-29T15:04:05Z"}, {**COMMON, "id": "seen-1"}]
    span = span_of(batch)
    assert span is not None
    typed_batches = decode("app.access", span, RecordTypes())
    assert typed_batches is not None
    got, expected, _ = both_paths(typed_batches, PipelineConfig(), "app.access")
    assert [(i, r.reason) for i, r in got.rejected] == [(2, "duplicate_id")]
    assert got.events == expected.events
    assert json.loads(got.events[1])["time"] == "2025-11-29T15:04:05.000000000Z"
