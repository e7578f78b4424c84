"""The Forward message reader (sources/forward/reader.py) bounds what a connection holds
decoded: batches of at most ENTRY_BATCH_BYTES of msgpack (plus one entry), everything it
decoded handed on before a read stops, no reference kept to a batch it handed on, and
its unpackers' buffers replaced after a large message. The entries are those of the
one-shot decoder (protocol.decode_message) wherever the stream is cut."""

from __future__ import annotations

import gc
import gzip
import weakref
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.sidecar.pipeline.typed_records import TypedRecords
from auditlock.sidecar.sources.forward import protocol
from auditlock.sidecar.sources.forward.protocol import MAX_ENTRY_BYTES, pack_event_time
from auditlock.sidecar.sources.forward.reader import (
    ENTRY_BATCH_BYTES,
    INFLATE,
    SHRINK_AFTER_BYTES,
    End,
    Entries,
    MessageReader,
)

MAX_FRAME = 8 * 1024 * 1024
T = 1_764_428_645
NS = T * 1_000_000_000


def forward_frame(entries: list[Any], tag: str = "app.access", **option: Any) -> bytes:
    return msgpack.packb([tag, entries, option] if option else [tag, entries])


def packed_frame(entries: list[Any], tag: str = "app.access") -> bytes:
    blob = b"".join(msgpack.packb(e) for e in entries)
    return msgpack.packb([tag, blob, {"chunk": "c"}])


def read_all(reader: MessageReader, stream: bytes, cuts: list[int]) -> list[Any]:
    items: list[Any] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        if cut > start:
            reader.feed(stream[start:cut])
            items.extend(reader.read())
            start = cut
    return items


def entries_of(items: list[Any]) -> list[tuple[str, int, Any]]:
    out: list[tuple[str, int, Any]] = []
    for item in items:
        if type(item) is TypedRecords:
            out.extend((item.tag, item.time_ns(i), item.general(i)) for i in range(len(item)))
        elif type(item) is Entries:
            out.extend(item)
    return out


def test_large_entries_are_handed_on_in_batches_of_bounded_bytes() -> None:
    record = {"a": "x" * 100_000}
    size = len(msgpack.packb([T, record]))
    frame = forward_frame([[T, record]] * 30)
    items = read_all(MessageReader(MAX_FRAME), frame, list(range(0, len(frame), 65536)))
    batches = [item for item in items if type(item) is Entries]
    assert sum(map(len, batches)) == 30
    assert max(map(len, batches)) * size <= ENTRY_BATCH_BYTES + size
    assert type(items[-1]) is End


def test_a_read_hands_on_everything_it_decoded_before_it_stops() -> None:
    frame = forward_frame([[T, {"n": n}] for n in range(10)])
    reader = MessageReader(MAX_FRAME)
    reader.feed(frame[:-3])  # ten entries but the last one whole, then more bytes needed
    items = list(reader.read())
    assert [len(item) for item in items] == [9]
    assert reader.settled and not reader._batch
    reader.feed(frame[-3:])
    items = list(reader.read())
    assert [type(item) for item in items] == [Entries, End]
    assert items[0] == [("app.access", NS, {"n": 9})]


@pytest.fixture
def fresh_record_types() -> Iterator[None]:
    """The record types a collector learns are per process (its senders' members); other
    tests of this session taught them other members or left them declining spans, which
    would send this test's typed spans down the general path."""
    types = protocol._RECORD_TYPES
    saved = dict(vars(types))
    types.__init__()  # type: ignore[misc]
    yield
    vars(types).update(saved)


@pytest.mark.usefixtures("fresh_record_types")
def test_the_reader_keeps_no_batch_it_handed_on() -> None:
    # A packed blob of several spans of the typed shape, and a Forward message.
    record = {
        "action": "orders.read",
        "actor": {"kind": "user", "name": "alice@example.com"},
        "target": {"resource": "orders", "namespace": "shop", "name": "o-1"},
        "outcome": "success",
        "pad": "y" * 900,
    }
    records = [[pack_event_time(NS + n), record] for n in range(900)]
    stream = packed_frame(records) + forward_frame([[T, {"n": n}] for n in range(3000)])
    assert len(stream) > 3 * MAX_ENTRY_BYTES
    reader = MessageReader(MAX_FRAME)
    reader.feed(stream)
    kinds = set()
    for item in reader.read():
        if type(item) is End:
            continue
        kinds.add(type(item))
        held = weakref.ref(item)
        del item
        gc.collect()
        assert held() is None, "the reader still holds a batch it handed on"
    assert kinds == {TypedRecords, Entries}


@pytest.mark.parametrize("entries", [1, 300, 500, 700])
def test_packed_blobs_of_any_size_and_a_small_frame_limit(entries: int) -> None:
    # Blobs of one span, of two (up to twice the scout's first buffer) and more.
    records = [[pack_event_time(NS + n), {"n": n, "pad": "p" * 900}] for n in range(entries)]
    frame = packed_frame(records)
    items = read_all(MessageReader(MAX_FRAME), frame, [len(frame) // 2])
    assert [t for _, t, _ in entries_of(items)] == [NS + n for n in range(entries)]
    small = msgpack.packb(["app.access", NS // 10**9, {"n": 1}])
    items = read_all(MessageReader(1024), small, [])
    assert entries_of(items) == [("app.access", NS, {"n": 1})]


def test_the_unpackers_are_replaced_after_a_large_message() -> None:
    big = forward_frame([[T, {"s": "z" * 1000}]] * (2 * SHRINK_AFTER_BYTES // 1000))
    small = forward_frame([[T, {"n": 1}]], chunk="after")
    reader = MessageReader(MAX_FRAME)
    first = reader.decoder
    reader.feed(big + small[:5])
    items = list(reader.read())
    assert type(items[-1]) is End
    assert reader.decoder is not first
    reader.feed(small[5:])
    items = list(reader.read())
    assert entries_of(items) == [("app.access", NS, {"n": 1})]
    assert items[-1].option == {"chunk": "after"}


records = st.dictionaries(
    st.text(max_size=5),
    st.one_of(st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=300), st.booleans()),
    max_size=4,
)
messages = st.one_of(
    st.lists(records, min_size=1, max_size=40).map(lambda rs: forward_frame([[T, r] for r in rs])),
    st.lists(records, min_size=1, max_size=40).map(
        lambda rs: packed_frame([[pack_event_time(NS), r] for r in rs])
    ),
    records.map(lambda r: msgpack.packb(["app.access", T, r, {"chunk": "m"}])),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, min_size=1, max_size=4), st.lists(st.integers(0, 20_000), max_size=8))
def test_any_cut_of_the_stream_gives_the_entries_of_the_one_shot_decoder(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frames)
    expected = []
    for frame in frames:
        entries, _ = protocol.decode_message(
            msgpack.unpackb(frame, **protocol.unpack_options()), MAX_FRAME
        )
        expected.extend(entries)
    items = read_all(MessageReader(MAX_FRAME), stream, [c for c in cuts if c < len(stream)])
    assert entries_of(items) == expected
    assert sum(type(item) is End for item in items) == len(frames)


def test_a_reader_left_in_a_compressed_blob_is_freed_without_the_cyclic_collector() -> None:
    # A connection closed in the middle of a blob drops its reader: nothing may keep the
    # decompressed blob alive until a full collection (a reference cycle).
    records = [[pack_event_time(NS + n), {"n": n, "pad": "p" * 900}] for n in range(700)]
    blob = gzip.compress(b"".join(msgpack.packb(e) for e in records))
    reader = MessageReader(MAX_FRAME)
    reader.feed(msgpack.packb(["app.access", blob, {"compressed": "gzip"}]))
    items = reader.read()
    assert next(items) is INFLATE
    assert type(next(items)) in (Entries, TypedRecords)
    assert reader.held > len(blob)  # the decompressed blob counts
    gone = weakref.ref(reader)
    gc.disable()
    try:
        del reader, items
        assert gone() is None
    finally:
        gc.enable()
