"""Reading Forward messages from a connection's byte stream, one entry at a time.

A Forward message can hold millions of entries within `max_frame_bytes`, and msgpack
builds Python objects that are up to ~75 times larger than their bytes (an empty map is
one byte and a 64-byte dict). So the message is never decoded as one object: its
array header, tag and option are read one by one, and each entry (a Forward-mode
`[time, record]`, a Message-mode record, or an entry of a packed blob) is decoded only
when it is at most MAX_ENTRY_BYTES long. A longer entry is skipped without being
decoded and handed on as `OVERSIZED`, which the pipeline rejects (`too_large`). Entries
are handed on in batches of at most ENTRY_BATCH entries and about MAX_ENTRY_BYTES of
msgpack (a packed blob: one span, protocol.py), every batch decoded from the bytes fed
so far before `read()` stops, and `read()` keeps none it handed on: so what a connection
holds decoded is one batch while it is being prepared, never between reads. The
pipeline keeps only the canonical bytes of the events it accepts and a bounded report of
the ones it rejects (pipeline/__init__.py).

Two unpackers read the stream in step: the scout skips the next object (C code, no
objects built) to learn its size, then the decoder decodes or skips the same object.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import msgpack

from auditlock.sidecar.pipeline.normalize import Oversized
from auditlock.sidecar.pipeline.typed_records import TypedRecords
from auditlock.sidecar.sources.forward.protocol import (
    MAX_ENTRY_BYTES,
    PACKED_BATCH,
    EventTime,
    ProtocolError,
    TypedBatch,
    _entry,
    _option,
    _tag,
    gunzip,
    new_unpacker,
    packed_spans,
    time_to_ns,
)

Entry = tuple[str, int, Any]

MAX_HEADER_OBJECT_BYTES = 64 * 1024  # a tag, an option map, a handshake message
ENTRY_BATCH = PACKED_BATCH  # entries handed to the pipeline at once
# msgpack bytes of a batch's entries: decoded, they can take ~75 times as much.
ENTRY_BATCH_BYTES = MAX_ENTRY_BYTES
# The unpackers' first buffer. Each grows to the largest message read (doubling) and
# never shrinks, so after a message longer than SHRINK_AFTER_BYTES they are replaced:
# an idle connection does not keep two buffers of max_frame_bytes.
UNPACKER_READ_SIZE = 64 * 1024
SHRINK_AFTER_BYTES = 1024 * 1024


_HEAD, _TAG, _SECOND, _ENTRIES, _RECORD, _OPTION = range(6)


class Entries(list[Entry]):
    """A batch of entries of the message being read. `checked`: the typed decoder read
    them, so their records passed its checks (protocol.py, TypedBatch)."""

    checked = False


class Inflate:
    """The next items come from a compressed blob, decompressed when the next one is
    asked for: up to max_frame_bytes from a few KiB, so the caller may wait for room
    first (server.py)."""

    __slots__ = ()


INFLATE = Inflate()


class End:
    """The message being read is complete; `option` is its option map (or None)."""

    __slots__ = ("option",)

    def __init__(self, option: dict[str, Any] | None) -> None:
        self.option = option


class MessageReader:
    """Feed bytes, then `read()`: yields `Entries` (or `TypedRecords`) batches of the
    message being read and an `End` when it is complete. `handshake=True` yields whole
    small objects instead (HELO/PING before the shared-key check)."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        # Batches and ends to hand on, in order; a packed blob's spans not yet decoded.
        self._out: deque[Any] = deque()
        self._spans: Iterator[list[list[Any]]] | None = None
        self._blob_end: End | None = None  # handed on after the blob's spans
        self._blob_bytes = 0  # of the blob whose spans are being handed on
        self._compressed: bytes | None = None  # a blob to decompress when asked for
        self.scout = new_unpacker(max_frame_bytes, UNPACKER_READ_SIZE)
        self.decoder = new_unpacker(max_frame_bytes, UNPACKER_READ_SIZE)
        self.handshake = False
        self.completed = 0  # messages read to their end
        self._fed = 0
        self._state = _HEAD
        self._sizing: int | None = None  # scout offset where the object being sized starts
        self._message_start = 0
        self._items = 0
        self._tag = ""
        self._time = 0
        self._remaining = 0
        self._blob: bytes | None = None
        self._batch = Entries()
        self._batch_bytes = 0  # msgpack bytes of the entries in _batch

    @property
    def in_message(self) -> bool:
        """True while part of a message has been read (a partial frame is buffered)."""
        return self._state != _HEAD or self._sizing is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read past (a partial message), per unpacker."""
        consumed: int = self.scout.tell()
        return self._fed - consumed

    def feed(self, data: bytes) -> None:
        self._fed += len(data)
        try:
            self.scout.feed(data)
            self.decoder.feed(data)
        except msgpack.BufferFull:
            raise ProtocolError(
                "too_large", f"message larger than {self.max_frame_bytes} bytes"
            ) from None

    @property
    def held(self) -> int:
        """Bytes held for the message being read: the bytes buffered (twice, scout and
        decoder) and the packed blob being decoded span by span."""
        return 2 * self.buffered + self._blob_bytes

    @property
    def in_blob(self) -> bool:
        """True while a packed blob, read whole, is being decoded span by span."""
        return self._spans is not None or self._compressed is not None

    @property
    def settled(self) -> bool:
        """True when the reader holds no decoded batch (a packed blob's span being handed
        on): a caller that dropped the batches it got holds nothing decoded either, so
        this is when it may let other connections run."""
        return not self._out

    def read(self) -> Iterator[Any]:
        """Everything the buffered bytes complete; stops when more bytes are needed, after
        handing on what it decoded (a batch cut short). Each item is yielded straight
        from the queue: no local keeps it while the caller works on it."""
        out = self._out
        while True:
            if out:
                yield out.popleft()
                continue
            if self._spans is not None or self._compressed is not None:
                self._next_span()
                continue
            try:
                if self.handshake:
                    if self._sizing is None:
                        self._message_start = self.scout.tell()
                    size = self._size()
                    if size is None:
                        return
                    out.append(self._decode(size, MAX_HEADER_OBJECT_BYTES, "bad_message"))
                    continue
                self._step()
            except _NeedMore:
                if not self._batch:
                    return
                self._hand_on_batch()

    def _next_span(self) -> None:
        """Decode the blob's next span into the queue, or end the message."""
        if self._compressed is not None:
            data = gunzip(self._compressed, self.max_frame_bytes)
            self._compressed = None
            self._blob_bytes = len(data)
            self._spans = packed_spans(self._tag, data)
            del data
        assert self._spans is not None
        for batch in next(self._spans, ()):
            if type(batch) is TypedRecords:
                self._out.append(batch)
                continue
            entries = Entries(batch)
            if type(batch) is TypedBatch:
                entries.checked = True
            self._out.append(entries)
        if not self._out:  # no span left
            self._spans = None
            self._blob_bytes = 0
            self._out.append(self._blob_end)
            self._blob_end = None

    # -- one step of the state machine ---------------------------------------------

    def _step(self) -> None:
        state = self._state
        if state == _HEAD:
            self._message_start = self.scout.tell()
            count = self._header()
            if count is None:
                raise _NeedMore
            if not 2 <= count <= 4:
                raise ProtocolError(
                    "bad_message", "message must be an array [tag, ...] of 2 to 4 items"
                )
            self._items = count
            self._state = _TAG
        elif state == _TAG:
            size = self._need_size()
            self._tag = _tag(self._decode(size, MAX_HEADER_OBJECT_BYTES, "bad_tag"))
            self._state = _SECOND
        elif state == _SECOND:
            self._second()
        elif state == _ENTRIES:
            if self._remaining == 0:
                self._state = _OPTION if self._items == 3 else -1
            else:
                size = self._need_size()
                self._check_frame()
                if size > MAX_ENTRY_BYTES:
                    self.decoder.skip()
                    self._add((self._tag, 0, Oversized(size)), 0)
                else:
                    self._add(_entry(self._tag, self._take()), size)
                self._remaining -= 1
        elif state == _RECORD:
            size = self._need_size()
            self._check_frame()
            if size > MAX_ENTRY_BYTES:
                self.decoder.skip()
                record: Any = Oversized(size)
            else:
                record = self._take()
            self._add((self._tag, self._time, record), 0)
            self._state = _OPTION if self._items == 4 else -1
        elif state == _OPTION:
            size = self._need_size()
            self._finish(_option(self._decode(size, MAX_HEADER_OBJECT_BYTES, "bad_option")))
            return
        if self._state == -1:
            self._finish(None)

    def _second(self) -> None:
        """Tell the mode by the second item: an array (Forward), a time (Message) or a
        binary/string (PackedForward)."""
        if self._sizing is None:
            count = self._header()
            if count is not None:
                if self._items == 4:
                    raise ProtocolError(
                        "bad_message", "Forward/PackedForward take [tag, entries, option?]"
                    )
                self._remaining = count
                self._state = _ENTRIES
                return
        self._need_size()
        self._check_frame()
        value = self._take()
        kind = type(value)
        if kind is int or kind is float or kind is EventTime:
            if self._items < 3:
                raise ProtocolError("bad_message", "Message mode needs [tag, time, record]")
            self._time = time_to_ns(value)
            self._state = _RECORD
            return
        if self._items == 4:
            raise ProtocolError("bad_message", "Forward/PackedForward take [tag, entries, option?]")
        if kind is str:
            value = value.encode("utf-8", "surrogateescape")
        elif kind is not bytes:
            raise ProtocolError(
                "bad_message", f"second item must be time, array or binary, got {kind.__name__}"
            )
        self._blob = value
        self._state = _OPTION if self._items == 3 else -1

    def _finish(self, option: dict[str, Any] | None) -> None:
        blob, self._blob = self._blob, None
        end = End(option)
        if blob is not None:
            compressed = option.get("compressed") if option else None
            # "text" means uncompressed (npm fluent-logger and Fluent Bit send it).
            if compressed is not None and compressed != "text":
                if compressed != "gzip":
                    raise ProtocolError("bad_option", f"unsupported compression {compressed!r:.40}")
                self._out.append(INFLATE)
                self._compressed = blob
            else:
                self._spans = packed_spans(self._tag, blob)
                self._blob_bytes = len(blob)
            self._blob_end = end
            del blob
        else:
            if self._batch:
                self._hand_on_batch()
            self._out.append(end)
        self._state = _HEAD
        self.completed += 1
        if self.scout.tell() - self._message_start > SHRINK_AFTER_BYTES:
            self._shrink()

    def _add(self, entry: Entry, size: int) -> None:
        batch = self._batch
        batch.append(entry)
        self._batch_bytes += size
        if len(batch) >= ENTRY_BATCH or self._batch_bytes >= ENTRY_BATCH_BYTES:
            self._hand_on_batch()

    def _hand_on_batch(self) -> None:
        self._out.append(self._batch)
        self._batch = Entries()
        self._batch_bytes = 0

    def _shrink(self) -> None:
        """New unpackers with the bytes buffered past the message just read."""
        rest: bytes = self.decoder.read_bytes(self._fed - self.decoder.tell())
        self.scout = new_unpacker(self.max_frame_bytes, UNPACKER_READ_SIZE)
        self.decoder = new_unpacker(self.max_frame_bytes, UNPACKER_READ_SIZE)
        self._fed = 0
        self.feed(rest)

    # -- scout and decoder in step -------------------------------------------------

    def _header(self) -> int | None:
        """The next array's length (both unpackers past its header), None when it is not
        here yet; raises ValueError-free: a non-array gives None via `_not_array`."""
        try:
            count: int = self.scout.read_array_header()
        except msgpack.OutOfData:
            raise _NeedMore from None
        except ValueError:
            if self._state == _HEAD:
                raise ProtocolError(
                    "bad_message", "message must be an array [tag, ...] of 2 to 4 items"
                ) from None
            return None
        self.decoder.read_array_header()
        return count

    def _size(self) -> int | None:
        """Size in bytes of the next object (the scout skips it); None: not all here."""
        if self._sizing is None:
            self._sizing = self.scout.tell()
        try:
            self.scout.skip()
        except msgpack.OutOfData:
            if self.scout.tell() - self._message_start > self.max_frame_bytes:
                raise ProtocolError(
                    "too_large", f"message larger than {self.max_frame_bytes} bytes"
                ) from None
            return None
        except Exception as exc:  # any msgpack decode error: the stream cannot be resynced
            raise ProtocolError("bad_msgpack", f"not a msgpack stream: {exc!r:.200}") from None
        size: int = self.scout.tell() - self._sizing
        self._sizing = None
        return size

    def _need_size(self) -> int:
        size = self._size()
        if size is None:
            raise _NeedMore
        return size

    def _check_frame(self) -> None:
        if self.scout.tell() - self._message_start > self.max_frame_bytes:
            raise ProtocolError("too_large", f"message larger than {self.max_frame_bytes} bytes")

    def _take(self) -> Any:
        """The decoder's next object (the scout has seen all of it)."""
        try:
            return self.decoder.unpack()
        except Exception as exc:  # e.g. TypeError: unhashable map key
            raise ProtocolError("bad_msgpack", f"undecodable msgpack: {exc!r:.200}") from None

    def _decode(self, size: int, limit: int, reason: str) -> Any:
        if size > limit:
            raise ProtocolError(reason, f"a {size}-byte item where at most {limit} are allowed")
        return self._take()


class _NeedMore(Exception):
    """The buffered bytes end inside the next step."""
