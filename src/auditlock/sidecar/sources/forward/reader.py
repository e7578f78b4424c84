"""Reading Forward messages from a connection's byte stream, one entry at a time.

A Forward message can hold millions of entries within `max_frame_bytes`, and msgpack
builds Python objects that are up to ~75 times larger than their bytes (an empty map is
one byte and a 64-byte dict). So the message is never decoded as one object: its
array header, tag and option are read one by one, and each entry (a Forward-mode
`[time, record]`, a Message-mode record, or an entry of a packed blob) is decoded only
when it is at most MAX_ENTRY_BYTES long. A longer entry is skipped without being
decoded and handed on as `OVERSIZED`, which the pipeline rejects (`too_large`). At most
one entry is decoded at a time, and the pipeline keeps only the canonical bytes of the
events it accepts and a bounded report of the ones it rejects (pipeline/__init__.py).

Two unpackers read the stream in step: the scout skips the next object (C code, no
objects built) to learn its size, then the decoder decodes or skips the same object.
"""

from __future__ import annotations

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
    packed_entries,
    time_to_ns,
)

Entry = tuple[str, int, Any]

MAX_HEADER_OBJECT_BYTES = 64 * 1024  # a tag, an option map, a handshake message
ENTRY_BATCH = PACKED_BATCH  # entries handed to the pipeline at once


_HEAD, _TAG, _SECOND, _ENTRIES, _RECORD, _OPTION = range(6)


class Entries(list[Entry]):
    """A batch of entries of the message being read. `checked`: the typed decoder read
    them, so their records passed its checks (protocol.py, TypedBatch)."""

    checked = False


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
        self._ready: list[Iterator[list[Any]] | Entries] = []
        self.scout = new_unpacker(max_frame_bytes)
        self.decoder = new_unpacker(max_frame_bytes)
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

    def read(self) -> Iterator[Any]:
        """Everything the buffered bytes complete; stops when more bytes are needed."""
        try:
            while True:
                if self.handshake:
                    if self._sizing is None:
                        self._message_start = self.scout.tell()
                    size = self._size()
                    if size is None:
                        return
                    yield self._decode(size, MAX_HEADER_OBJECT_BYTES, "bad_message")
                    continue
                done, option = self._step()
                if self._ready:
                    ready, self._ready = self._ready, []
                    for entries in ready:
                        if isinstance(entries, Entries):
                            yield entries
                            continue
                        for batch in entries:  # a packed blob, decoded batch by batch
                            if type(batch) is TypedRecords:
                                yield batch
                                continue
                            out = Entries(batch)
                            if type(batch) is TypedBatch:
                                out.checked = True
                            yield out
                if done:
                    yield End(option)
        except _NeedMore:
            return

    # -- one step of the state machine ---------------------------------------------

    def _step(self) -> tuple[bool, dict[str, Any] | None]:
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
                    self._add((self._tag, 0, Oversized(size)))
                else:
                    self._add(_entry(self._tag, self._take()))
                self._remaining -= 1
        elif state == _RECORD:
            size = self._need_size()
            self._check_frame()
            if size > MAX_ENTRY_BYTES:
                self.decoder.skip()
                record: Any = Oversized(size)
            else:
                record = self._take()
            self._add((self._tag, self._time, record))
            self._state = _OPTION if self._items == 4 else -1
        elif state == _OPTION:
            size = self._need_size()
            option = _option(self._decode(size, MAX_HEADER_OBJECT_BYTES, "bad_option"))
            return self._finish(option)
        if self._state == -1:
            return self._finish(None)
        return False, None

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

    def _finish(self, option: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
        blob, self._blob = self._blob, None
        if blob is not None:
            compressed = option.get("compressed") if option else None
            # "text" means uncompressed (npm fluent-logger and Fluent Bit send it).
            if compressed is not None and compressed != "text":
                if compressed != "gzip":
                    raise ProtocolError("bad_option", f"unsupported compression {compressed!r:.40}")
                blob = gunzip(blob, self.max_frame_bytes)
            self._ready.append(packed_entries(self._tag, blob))
            del blob
        if self._batch:
            self._ready.append(self._batch)
            self._batch = Entries()
        self._state = _HEAD
        self.completed += 1
        return True, option

    def _add(self, entry: Entry) -> None:
        batch = self._batch
        batch.append(entry)
        if len(batch) >= ENTRY_BATCH:
            self._ready.append(batch)
            self._batch = Entries()

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
