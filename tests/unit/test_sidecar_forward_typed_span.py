"""A PackedForward span decoded in one call (msgspec, typed, checked against the ledger's
value space) gives exactly the entries of the entry-by-entry decoder (msgpack), or
declines and leaves the span to it."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.sidecar.sources.forward.protocol import (
    ProtocolError,
    _decode_span_general,
    _decode_span_typed,
    pack_event_time,
)

TAG = "app.access"
NS = 1_764_428_645_123_456_789

keys = st.one_of(st.text(max_size=4), st.integers(-3, 3))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.builds(msgpack.ExtType, st.integers(0, 5), st.binary(min_size=0, max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)
times = st.one_of(
    st.integers(0, 2**40).map(pack_event_time),
    st.integers(0, 2**34),
    st.floats(0, 2**34),
    st.builds(msgpack.ExtType, st.just(0), st.binary(min_size=8, max_size=8)),
)
records = st.one_of(
    st.dictionaries(st.text(max_size=6), values, max_size=4),
    st.dictionaries(keys, values, max_size=2),
    values,
)
entries = st.lists(st.one_of(st.tuples(times, records).map(list), values), min_size=1, max_size=6)
common = st.lists(
    st.tuples(
        st.integers(0, 2**40).map(pack_event_time), st.dictionaries(st.text(max_size=6), values)
    ).map(list),
    min_size=1,
    max_size=6,
)


def general(span: bytes) -> list[Any] | str:
    try:
        return list(itertools.chain.from_iterable(_decode_span_general(TAG, memoryview(span))))
    except ProtocolError as exc:
        return f"{exc.reason}: {exc}"


def packed(items: list[Any]) -> bytes:
    return b"".join(msgpack.packb(item, use_bin_type=True) for item in items)


@settings(max_examples=150, deadline=None)
@given(st.one_of(common, entries), st.booleans())
def test_the_typed_span_gives_the_general_decoders_entries_or_declines(
    items: list[Any], bad_utf8: bool
) -> None:
    span = packed(items)
    if bad_utf8:  # a str whose bytes are not UTF-8, in a record
        span += packed([[pack_event_time(NS), {}]])[:-1] + b"\x81\xa1k\xa2\xff\xfe"
    got = _decode_span_typed(TAG, memoryview(span))
    if got is None:
        return
    assert got == general(span)
    assert all(type(time_ns) is int for _, time_ns, _ in got)


def test_the_common_span_takes_the_typed_path() -> None:
    items = [
        [pack_event_time(NS + n), {"action": "read", "n": n, "d": {"k": [1, None, "x", True]}}]
        for n in range(3)
    ]
    span = packed(items)
    got = _decode_span_typed(TAG, memoryview(span))
    assert got is not None and got == general(span)
    # Repeated member names: both keep the last.
    repeated = packed([[pack_event_time(NS), {}]])[:-1] + b"\x82\xa1a\x01\xa1a\x02"
    assert _decode_span_typed(TAG, memoryview(repeated)) == general(repeated)
    assert general(repeated) == [(TAG, NS, {"a": 2})]


def test_spans_the_typed_path_leaves_alone() -> None:
    stamp = packed([[pack_event_time(NS), {"at": msgpack.Timestamp(1, 0)}]])
    truncated = packed([[pack_event_time(NS), {"a": 1}]])[:-1]
    others = [
        {"x": 1.5},  # floats, binary and ext values: the pipeline's general path
        {"x": b"raw"},
        {"x": msgpack.ExtType(3, b"")},
        {"x": 2**53},  # outside the ledger's integers
        {"x": [[[[[[[[[]]]]]]]]]},  # deeper than the typed decoder looks
    ]
    spans = [packed([[pack_event_time(NS), record]]) for record in others]
    spans += [stamp, truncated, packed([[1, {}]]), packed([[pack_event_time(NS), "x"]])]
    for span in spans:
        assert _decode_span_typed(TAG, memoryview(span)) is None
