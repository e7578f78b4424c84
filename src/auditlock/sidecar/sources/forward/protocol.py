"""Decoding Fluentd Forward protocol v1 messages into (tag, time, record) entries.

Spec: fluent/fluentd wiki, "Forward Protocol Specification v1". A message is one
msgpack array in one of four modes, told apart by the type of the second element:

    Message                  [tag, time, record, option?]
    Forward                  [tag, [[time, record], ...], option?]
    PackedForward            [tag, <concatenated msgpack [time, record] entries>, option?]
    CompressedPackedForward  as PackedForward, option {"compressed": "gzip"}

The packed entries arrive as msgpack bin or as str; Fluentd's out_forward sends a str
that is not valid UTF-8. The unpacker therefore decodes str with `surrogateescape`,
which keeps the original bytes recoverable (`entries.encode("utf-8", "surrogateescape")`);
any other string that still holds a surrogate was invalid UTF-8 and is rejected later.

`time` is an integer or float of seconds, or EventTime (msgpack ext type 0: big-endian
uint32 seconds, uint32 nanoseconds). Everything here is pure CPU and raises
`ProtocolError` with a short machine-readable reason (a metric label) and a message.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import msgspec

from auditlock.ledger.typed_json import TYPED_DEPTH, json_values
from auditlock.sidecar.pipeline.normalize import Oversized
from auditlock.sidecar.pipeline.typed_records import RecordTypes, TypedRecords

EVENT_TIME_EXT = 0
# An entry (one event) longer than this, as msgpack, is refused without being decoded:
# decoding can take ~75 times an object's size in memory (an empty map is one byte and
# a 64-byte dict). docs/sidecar.md, "Limits".
MAX_ENTRY_BYTES = 256 * 1024
MAX_SECONDS = 1 << 34  # year 2514: anything later is a corrupt timestamp, not a date
_EVENT_TIME = struct.Struct(">II")

Entry = tuple[str, int, Any]  # (tag, time in ns since the epoch, record as decoded)


class ProtocolError(Exception):
    """A message that breaks the protocol. `reason` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EventTime(int):
    """An EventTime ext value, already converted to nanoseconds since the epoch."""

    __slots__ = ()


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_EXT and len(data) == 8:
        seconds, nanos = _EVENT_TIME.unpack(data)
        if nanos >= 1_000_000_000:
            return msgpack.ExtType(code, data)  # rejected as a bad time below
        return EventTime(seconds * 1_000_000_000 + nanos)
    return msgpack.ExtType(code, data)


def unpack_options() -> dict[str, Any]:
    """How every Forward object is decoded (see the module doc)."""
    return {
        "raw": False,
        "unicode_errors": "surrogateescape",
        "ext_hook": _ext_hook,
        "strict_map_key": False,
        "use_list": True,
    }


def new_unpacker(max_frame_bytes: int, read_size: int = 0) -> msgpack.Unpacker:
    """A streaming unpacker; buffering more than `max_frame_bytes` raises BufferFull.
    `read_size`: its first buffer (msgpack's default, 0, is 1 MiB or the maximum); the
    buffer doubles as needed and never shrinks."""
    return msgpack.Unpacker(
        max_buffer_size=max_frame_bytes,
        read_size=min(read_size, max_frame_bytes),  # msgpack refuses a larger one
        **unpack_options(),
    )


def pack_event_time(time_ns: int) -> msgpack.ExtType:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return msgpack.ExtType(EVENT_TIME_EXT, _EVENT_TIME.pack(seconds, nanos))


def time_to_ns(value: Any) -> int:
    """Forward time (int/float seconds or EventTime) to integer nanoseconds."""
    kind = type(value)
    if kind is EventTime:
        return int(value)
    if kind is int and 0 <= value < MAX_SECONDS:
        return int(value) * 1_000_000_000
    if kind is float and 0.0 <= value < MAX_SECONDS:  # NaN fails both comparisons
        return int(value * 1_000_000_000)
    raise ProtocolError(
        "bad_time", f"event time must be int, float or EventTime, got {value!r:.60}"
    )


def _tag(value: Any) -> str:
    if type(value) is not str or not value:
        raise ProtocolError("bad_tag", "tag must be a non-empty string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("invalid_utf8", "tag is not valid UTF-8") from None
    return value


def decode_message(message: Any, max_frame_bytes: int) -> tuple[list[Entry], dict[str, Any] | None]:
    """One Forward message → its entries and its option map (or None)."""
    if type(message) is not list or not 2 <= len(message) <= 4:
        raise ProtocolError("bad_message", "message must be an array [tag, ...] of 2 to 4 items")
    tag = _tag(message[0])
    second = message[1]
    kind = type(second)
    if kind is int or kind is float or kind is EventTime:
        # Message mode: [tag, time, record, option?]
        if len(message) < 3:
            raise ProtocolError("bad_message", "Message mode needs [tag, time, record]")
        option = _option(message[3] if len(message) == 4 else None)
        return [(tag, time_to_ns(second), message[2])], option
    if len(message) == 4:
        raise ProtocolError("bad_message", "Forward/PackedForward take [tag, entries, option?]")
    option = _option(message[2] if len(message) == 3 else None)
    if kind is list:
        entries = [_entry(tag, item) for item in second]
        return entries, option
    if kind is str:
        second = second.encode("utf-8", "surrogateescape")
        kind = bytes
    if kind is bytes:
        compressed = option.get("compressed") if option else None
        # "text" means uncompressed (npm fluent-logger and Fluent Bit send it explicitly).
        if compressed is not None and compressed != "text":
            if compressed != "gzip":
                raise ProtocolError("bad_option", f"unsupported compression {compressed!r:.40}")
            second = gunzip(second, max_frame_bytes)
        return [entry for batch in packed_entries(tag, second) for entry in batch], option
    raise ProtocolError(
        "bad_message", f"second item must be time, array or binary, got {kind.__name__}"
    )


def _option(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise ProtocolError("bad_option", "option must be a map")
    chunk = value.get("chunk")
    if chunk is not None:
        if type(chunk) is not str or not 0 < len(chunk) <= 256:
            raise ProtocolError("bad_option", "option chunk must be a short string")
        if not chunk.isascii():
            try:
                chunk.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError("invalid_utf8", "option chunk is not valid UTF-8") from None
    return value


def _entry(tag: str, item: Any) -> Entry:
    if type(item) is not list or len(item) != 2:
        raise ProtocolError("bad_entry", "entry must be [time, record]")
    return tag, time_to_ns(item[0]), item[1]


PACKED_BATCH = 1024  # entries of a packed blob handed on at once


def packed_spans(tag: str, data: bytes) -> Iterator[list[list[Any]]]:
    """The entries of a PackedForward blob (see the module doc), one span at a time, each
    span as its batches of at most PACKED_BATCH entries (`_decode_span`).

    A scout skips (C code, no objects built) over spans of entries of up to
    MAX_ENTRY_BYTES together, and each span is then decoded in one pass; an entry longer
    than that on its own is not decoded (`Oversized`). So no entry over the limit is ever
    built, what is decoded at once is one span (at most MAX_ENTRY_BYTES of msgpack), and
    a common blob (smaller than the limit) is one span. The scout is fed the blob a
    slice at a time, so it holds about one span's bytes, not a copy of the blob.
    """
    end_of_data = len(data)
    view = memoryview(data)
    if end_of_data <= MAX_ENTRY_BYTES:
        yield list(_decode_span(tag, view))
        return
    scout = new_unpacker(end_of_data, read_size=2 * MAX_ENTRY_BYTES)
    fed = 0
    skip = scout.skip
    tell = scout.tell
    start = end = 0
    count = 0  # entries in view[start:end]: the one-call decoders need not count them
    while end < end_of_data:
        try:
            skip()
        except msgpack.OutOfData:
            if fed < end_of_data:
                # Doubling what the entry has so far: an oversized one is scanned a few
                # times, not once per slice.
                more = max(MAX_ENTRY_BYTES, fed - end)
                scout.feed(view[fed : fed + more])
                fed = min(fed + more, end_of_data)
                continue
            raise ProtocolError(
                "bad_entries", "packed entries end in the middle of an entry"
            ) from None
        except Exception as exc:
            raise ProtocolError("bad_entries", f"packed entries are not msgpack: {exc}") from None
        entry_end = tell()
        if entry_end - end > MAX_ENTRY_BYTES:
            if end > start:
                yield list(_decode_span(tag, view[start:end], count))
            yield [[(tag, 0, Oversized(entry_end - end))]]
            start = entry_end
            count = 0
        elif entry_end - start > MAX_ENTRY_BYTES:
            yield list(_decode_span(tag, view[start:end], count))
            start = end
            count = 1
        else:
            count += 1
        end = entry_end
    if end > start:
        yield list(_decode_span(tag, view[start:end], count))


def packed_entries(tag: str, data: bytes) -> Iterator[list[Any]]:
    """`packed_spans`, batch by batch."""
    for span in packed_spans(tag, data):
        yield from span


def _decode_span(tag: str, span: memoryview, count: int | None = None) -> Iterator[list[Any]]:
    """Every entry of `span`, which holds whole entries only (`count` of them, when the
    caller counted), in batches: `TypedRecords` when the record types fit, else
    `TypedBatch` when the typed maps fit, else lists of entries (see below)."""
    if not span:
        return
    array = _entry_array(span, count)
    if array is not None:
        records = _decode_span_records(tag, span, array)
        if records is not None:
            yield from records
            return
        entries = _decode_array_typed(tag, array)
        if entries is not None:
            for start in range(0, len(entries), PACKED_BATCH):
                yield TypedBatch(entries[start : start + PACKED_BATCH])
            return
    yield from _decode_span_general(tag, span)


def _decode_span_general(tag: str, span: memoryview) -> Iterator[list[Entry]]:
    """`_decode_span` entry by entry: any span, and the error that names its problem."""
    unpacker = new_unpacker(max(len(span), 1))
    batch: list[Entry] = []
    try:
        unpacker.feed(span)
        end = 0
        tell = unpacker.tell
        append = batch.append
        for item in unpacker:
            # _entry() inlined for the common shape: this loop runs once per event.
            if type(item) is list and len(item) == 2 and type(item[0]) is EventTime:
                append((tag, int(item[0]), item[1]))
            else:
                append(_entry(tag, item))
            end = tell()  # after the last complete entry
            if len(batch) >= PACKED_BATCH:
                yield batch
                batch = []
                append = batch.append
    except ProtocolError:
        raise
    except Exception as exc:  # any msgpack decode error (incl. TypeError: unhashable key)
        raise ProtocolError("bad_entries", f"packed entries are not msgpack: {exc}") from None
    if end != len(span):
        raise ProtocolError("bad_entries", "packed entries end in the middle of an entry")
    if batch:
        yield batch


# The common span, decoded in one C call (msgspec) and checked while decoding: entries of
# [EventTime, record], each record a map with string member names whose values are in the
# ledger's JSON value space (typed_json.py: strings, booleans, null, integers within
# +-(2**53 - 1), arrays and maps, at most TYPED_DEPTH levels deep; no floats, binary or ext
# values). Anything else (other times or records, floats a record may still send and the
# pipeline turns into strings, invalid UTF-8, an undecodable span) returns None, and the
# span is decoded entry by entry as above, which names the problem. So a `TypedBatch`
# tells the pipeline which checks its records have already passed.
_RECORD_VALUE: Any = json_values(TYPED_DEPTH)  # a type built at run time
_TYPED_SPAN: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
    list[tuple[msgspec.msgpack.Ext, dict[str, _RECORD_VALUE]]]
)
_ARRAY32 = b"\xdd"


class TypedBatch(list[Entry]):
    """Entries decoded by the typed decoder (see above)."""


def _entry_array(span: memoryview, count: int | None = None) -> bytes | None:
    """The span's entries as one msgpack array (for a one-call decoder), or None when the
    span is not a sequence of whole msgpack objects. `count`: the span's entries, already
    counted by the caller's scout."""
    if count is not None:
        return b"".join((_ARRAY32, count.to_bytes(4, "big"), span))
    data = bytes(span)
    counter = msgpack.Unpacker(max_buffer_size=max(len(data), 1))
    counter.feed(data)
    skip = counter.skip
    count = 0
    try:
        while True:
            skip()
            count += 1
    except msgpack.OutOfData:
        pass
    except Exception:
        return None
    if counter.tell() != len(data) or count >= 1 << 32:
        return None
    return b"".join((_ARRAY32, count.to_bytes(4, "big"), data))


def _event_times(items: list[Any]) -> list[int] | None:
    """The ns of each entry's EventTime stamp; None when one is not a valid EventTime."""
    unpack = _EVENT_TIME.unpack
    times: list[int] = []
    append = times.append
    for stamp, _ in items:
        raw: Any = stamp.data  # bytes when decoded
        if stamp.code != EVENT_TIME_EXT or len(raw) != 8:
            return None
        seconds, nanos = unpack(raw)
        if nanos >= 1_000_000_000:
            return None
        append(seconds * 1_000_000_000 + nanos)
    return times


def _decode_span_typed(tag: str, span: memoryview) -> TypedBatch | None:
    array = _entry_array(span)
    return None if array is None else _decode_array_typed(tag, array)


def _decode_array_typed(tag: str, array: bytes) -> TypedBatch | None:
    try:
        items = _TYPED_SPAN.decode(array)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    times = _event_times(items)
    if times is None:
        return None
    return TypedBatch(
        [(tag, time_ns, record) for time_ns, (_, record) in zip(times, items, strict=True)]
    )


# A span of records of the common shape goes further: decoded into the collector's record
# structs (sidecar/pipeline/typed_records.py), which check the known members too, so the
# normalizer assembles events without reading members one by one.
_RECORD_TYPES = RecordTypes()


def _decode_span_records(
    tag: str, span: memoryview, array: bytes, types: RecordTypes = _RECORD_TYPES
) -> list[TypedRecords] | None:
    items = types.decode(array)
    stamps = None if items is None else _event_stamps(items)
    if items is None or stamps is None:
        return None
    extras = types.extras
    general = _GeneralEntries(tag, span)
    return [
        TypedRecords(
            items[start : start + PACKED_BATCH],
            tag,
            stamps[2 * start : 2 * (start + PACKED_BATCH)],
            extras,
            general.batch(start),
        )
        for start in range(0, len(items), PACKED_BATCH)
    ]


_FIXEXT8 = b"\xd7"  # the form every Forward client gives an EventTime (type 0)
_EVENT_TIME_TYPE = bytes([EVENT_TIME_EXT])
_first = operator.itemgetter(0)


def _event_stamps(items: list[Any]) -> tuple[int, ...] | None:
    """Seconds and nanoseconds of each entry's raw stamp in turn, all checked and read
    in a few C calls; None when one is not a fixext 8 EventTime with nanoseconds below
    one second (the typed maps then read any form, or the general decoder refuses it)."""
    count = len(items)
    stamps = b"".join(map(_first, items))
    if (
        len(stamps) != 10 * count
        or stamps[0::10] != _FIXEXT8 * count
        or stamps[1::10] != _EVENT_TIME_TYPE * count
    ):
        return None
    values: tuple[int, ...] = struct.unpack(">" + "2xII" * count, stamps)
    if count and max(values[1::2]) >= 1_000_000_000:
        return None
    return values


class _GeneralEntries:
    """The records of a span as the entry-by-entry decoder reads them, decoded only when
    the normalizer asks for one (a record it leaves to its general path), one batch of
    PACKED_BATCH at a time."""

    def __init__(self, tag: str, span: memoryview) -> None:
        self._tag = tag
        self._span = span
        self._start = -1
        self._records: list[Any] = []

    def batch(self, start: int) -> Callable[[int], Any]:
        return lambda index: self.record(start + index)

    def record(self, index: int) -> Any:
        start = index - index % PACKED_BATCH
        if start != self._start:
            self._records = []
            for number, batch in enumerate(_decode_span_general(self._tag, self._span)):
                if number * PACKED_BATCH == start:
                    self._records = [record for _, _, record in batch]
                    break
            self._start = start
        return self._records[index - start]


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (several concatenated members allowed) up to `limit` bytes."""
    out: list[bytes] = []
    total = 0
    try:
        while data:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit - total + 1)
            total += len(chunk)
            out.append(chunk)
            if total > limit or inflater.unconsumed_tail:
                raise ProtocolError("too_large", f"decompressed entries exceed {limit} bytes")
            if not inflater.eof:
                raise ProtocolError("bad_gzip", "gzip data is truncated")
            data = inflater.unused_data
    except zlib.error as exc:
        raise ProtocolError("bad_gzip", f"entries are not valid gzip: {exc}") from None
    return b"".join(out)


# --- shared_key handshake (HELO / PING / PONG) ------------------------------------


def new_nonce() -> bytes:
    return os.urandom(16)


def helo(nonce: bytes) -> bytes:
    """Server → client: ['HELO', {nonce, auth, keepalive}]. No user auth: auth is ''."""
    return _packb(["HELO", {"nonce": nonce, "auth": "", "keepalive": True}])


def _digest(salt: bytes, hostname: bytes, nonce: bytes, shared_key: bytes) -> str:
    return hashlib.sha512(salt + hostname + nonce + shared_key).hexdigest()


def _as_bytes(value: Any) -> bytes | None:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogateescape")
    return None


def check_ping(
    message: Any, nonce: bytes, shared_key: str, self_hostname: str
) -> tuple[bool, str, bytes]:
    """Client → server PING; returns (ok, reason, PONG bytes to send back).

    PING = ['PING', client_hostname, salt, sha512_hex(salt + client_hostname + nonce + key),
            username, password_digest]
    PONG = ['PONG', ok, reason, server_hostname, sha512_hex(salt + server_hostname + nonce + key)]
    """
    key = shared_key.encode("utf-8")
    if type(message) is not list or len(message) != 6 or message[0] != "PING":
        return (
            False,
            "invalid ping message",
            _pong(False, "invalid ping message", self_hostname, b""),
        )
    hostname = _as_bytes(message[1])
    salt = _as_bytes(message[2])
    digest = _as_bytes(message[3])
    if hostname is None or salt is None or digest is None:
        return (
            False,
            "invalid ping message",
            _pong(False, "invalid ping message", self_hostname, b""),
        )
    expected = _digest(salt, hostname, nonce, key).encode("ascii")
    if not hmac.compare_digest(digest, expected):
        return False, "shared_key mismatch", _pong(False, "shared_key mismatch", self_hostname, b"")
    server_digest = _digest(salt, self_hostname.encode("utf-8"), nonce, key)
    return True, "", _pong(True, "", self_hostname, server_digest.encode("ascii"))


def _pong(ok: bool, reason: str, hostname: str, digest: bytes) -> bytes:
    return _packb(["PONG", ok, reason, hostname, digest.decode("ascii")])


def ack(chunk: str) -> bytes:
    return _packb({"ack": chunk})


def _packb(value: Any) -> bytes:
    data: bytes = msgpack.packb(value)
    return data
