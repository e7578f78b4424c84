"""normalize → policy filter → redact: what every event goes through before the spool."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from auditlock.ledger.canonical import canonical_bytes, canonical_lines
from auditlock.ledger.limits import MAX_EVENT_BYTES
from auditlock.ledger.typed_json import has_astral
from auditlock.sidecar.config import PipelineConfig, SourceIdentity
from auditlock.sidecar.pipeline.filter import PolicyFilter
from auditlock.sidecar.pipeline.normalize import Normalizer, Rejected
from auditlock.sidecar.pipeline.recent_ids import RecentIds
from auditlock.sidecar.pipeline.redact import Redactor
from auditlock.sidecar.pipeline.typed_records import Event, TypedRecords

__all__ = ["MESSAGE_EVENT_BYTES", "Pipeline", "Processed", "Rejected"]


class Pipeline:
    def __init__(
        self,
        config: PipelineConfig,
        identity: SourceIdentity,
        recent_ids: RecentIds | None = None,
        observer_tag_prefix: str | None = None,
    ) -> None:
        self.normalize = Normalizer(identity, recent_ids, observer_tag_prefix)
        # The common shape, checked inline; anything else goes to `normalize`.
        self.normalize_fast = self.normalize.fast
        self.filter = PolicyFilter(config)
        self.redactor = Redactor(config.redact)

    def process(
        self, input_name: str, tag: str, time_ns: int, record: Any
    ) -> dict[str, Any] | None:
        """The event to spool, None when the policy filters it out; raises Rejected."""
        event = self.normalize(input_name, tag, time_ns, record)
        if not self.filter.keep(event):
            return None
        if self.redactor:
            self.redactor.apply(event)
        return event

    def process_all(
        self, input_name: str, entries: Iterable[tuple[str, int, Any]] | TypedRecords
    ) -> Processed:
        """`process` over many entries, each kept event turned into its canonical bytes at
        once (what the spool stores).

        The per-event calls are looked up once (hot path), and no event dict outlives its
        own step: a read's thousand events alive together would be promoted through the
        cyclic garbage collector's generations and make its full collections frequent.
        """
        if type(entries) is TypedRecords:
            return self._process_typed(input_name, entries)
        out = Processed()
        events = out.events
        normalize = self.normalize
        keep = None if self.filter.keeps_everything else self.filter.keep
        redact = self.redactor.apply if self.redactor else None
        encode = canonical_bytes
        compact = _compact
        fast = self.normalize_fast
        # Entries a typed decoder read (Forward's TypedBatch) need fewer checks.
        checked = getattr(entries, "checked", False)
        for index, (tag, time_ns, record) in enumerate(entries):
            event = fast(input_name, tag, time_ns, record, checked)
            if event is None:
                try:
                    event = normalize(input_name, tag, time_ns, record)
                except Rejected as exc:
                    out.reject(index, exc)
                    continue
                names_checked = True
            else:
                names_checked = not checked
            if keep is not None and not keep(event):
                out.filtered += 1
                continue
            if redact is not None:
                redact(event)
            try:
                data = encode(event)
            except (TypeError, ValueError, OverflowError) as exc:  # a gap in validation
                out.unstorable.append(
                    Rejected("bad_value", "record", f"value cannot be stored: {exc}")
                )
                continue
            if not names_checked and has_astral(data):
                redone = self._redo(out, index, input_name, tag, time_ns, record)
                if redone is None:
                    continue
                data = redone
            if len(data) > MAX_EVENT_BYTES:  # escaping can make the stored form larger
                out.unstorable.append(_too_large(data))
                continue
            # A copy of exactly its length: orjson's result keeps its whole working
            # buffer (~4 KiB resident for a 300-byte event), and a message's events are
            # held until they are spooled (100,000 events: 393 MiB, copied: 31 MiB).
            events.append(compact(data))
            if normalize.sender_key is not None:
                out.ids.append((normalize.sender_key, len(events) - 1, index))
        return out

    def _process_typed(self, input_name: str, records: TypedRecords) -> Processed:
        """`process_all` over records a typed decoder read: the normalizer makes `Event`
        structs of the common ones, and the batch becomes canonical lines in one call."""
        out = Processed()
        results, keys, clean = self.normalize.typed(input_name, records)
        keep = None if self.filter.keeps_everything else self.filter.keep
        redact = self.redactor.apply if self.redactor else None
        values: list[Any] = results
        entry_of: list[int] | None = None  # the entry of each value (None: the same index)
        if not clean or keep is not None or redact is not None:
            values = []
            entry_of = []
            for index, event in enumerate(results):
                if type(event) is Rejected:
                    out.reject(index, event)
                    continue
                if keep is not None or redact is not None:
                    if type(event) is Event:
                        event = msgspec.to_builtins(event)  # what the filter and redactor read
                    if keep is not None and not keep(event):
                        out.filtered += 1
                        continue
                    if redact is not None:
                        redact(event)
                values.append(event)
                entry_of.append(index)
        try:
            lines = canonical_lines(values)
        except (TypeError, ValueError, OverflowError):  # a gap in validation: find it
            lines = []
            for value in values:
                try:
                    lines.append(canonical_lines([value])[0])
                except (TypeError, ValueError, OverflowError) as exc:
                    lines.append(b"")
                    out.unstorable.append(
                        Rejected("bad_value", "record", f"value cannot be stored: {exc}")
                    )
        events = out.events
        if (
            entry_of is None
            and all(map(bytes.isascii, lines))
            and max(map(len, lines), default=0) <= MAX_EVENT_BYTES
        ):
            events.extend(lines)  # the common batch: nothing more to check
            out.ids.extend((key, index, index) for key, index in keys)
            return out
        position_of: dict[int, int] = {}
        for position, data in enumerate(lines):
            index = position if entry_of is None else entry_of[position]
            if not data:
                continue  # unstorable, counted above
            if type(results[index]) is Event and has_astral(data):
                redone = self._redo(
                    out, index, input_name, records.tag, records.time_ns(index),
                    records.general(index),
                )  # fmt: skip
                if redone is None:
                    continue
                data = redone
            if len(data) > MAX_EVENT_BYTES:
                out.unstorable.append(_too_large(data))
                continue
            position_of[index] = len(events)
            events.append(data)
        out.ids.extend(
            (key, position_of[index], index) for key, index in keys if index in position_of
        )
        out.rejected.sort(key=_entry_index)  # redone ones came last
        return out

    def _redo(
        self, out: Processed, index: int, input_name: str, tag: str, time_ns: int, record: Any
    ) -> bytes | None:
        """The stored form of an entry the general path decides: one with a member name
        above U+FFFF, refused there, that the typed decoder did not look at (the id the
        general path assigns is new). None: rejected or filtered (counted in `out`)."""
        try:
            event = self.process(input_name, tag, time_ns, record)
        except Rejected as exc:
            out.reject(index, exc)
            return None
        if event is None:
            out.filtered += 1
            return None
        return canonical_bytes(event)


def _entry_index(rejection: tuple[int, Rejected]) -> int:
    return rejection[0]


def _too_large(data: bytes) -> Rejected:
    return Rejected(
        "too_large",
        "record",
        f"event is {len(data)} bytes once stored, more than the ledger's "
        f"{MAX_EVENT_BYTES} (docs/FORMAT.md, size limits)",
    )


# The events of one Forward message or HTTP request, as canonical JSON lines, may take at
# most this before they are spooled: an event is a larger line than its input (its id,
# time, source and intake are added), up to ~10 times for the smallest events. Over it,
# the message (connection closed) or request (413) is refused: "send smaller batches".
MESSAGE_EVENT_BYTES = 16 * 1024 * 1024

# Rejections kept with their message per message or request; the rest are only counted. A
# rejection must cost O(1) memory: a message of millions of bad entries within the frame
# limit would otherwise hold an exception (and its traceback's frames) for each.
REPORTED_REJECTIONS = 100


def _compact(data: bytes) -> bytes:
    return bytes(memoryview(data))


@dataclass
class Processed:
    """What `process_all` made of a list of entries."""

    events: list[bytes] = field(default_factory=list)  # canonical bytes, to spool
    # The first REPORTED_REJECTIONS rejections (entry index, why); `rejected_count` and
    # `rejected_reasons` count all of them.
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)
    rejected_count: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    filtered: int = 0  # dropped by the policy filter
    unstorable: list[Rejected] = field(default_factory=list)  # valid but no canonical bytes
    seen: int = 0  # entries behind this result, for a caller that extends it batch by batch
    # Sender-chosen ids of `events`: (key, index in events, entry index), recent_ids.py.
    ids: list[tuple[int, int, int]] = field(default_factory=list)

    def reject(self, index: int, exc: Rejected) -> None:
        self.rejected_count += 1
        reasons = self.rejected_reasons
        reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
        if len(self.rejected) < REPORTED_REJECTIONS:
            # Kept without the traceback and the chained error: their frames hold the
            # record and the normalizer's locals.
            exc.__traceback__ = None
            exc.__context__ = None
            self.rejected.append((index, exc))

    def drop(self, events: set[int]) -> None:
        """Remove the events at these indexes (refused after preparing)."""
        self.events = [e for i, e in enumerate(self.events) if i not in events]
        dropped = sorted(events)
        self.ids = [
            (key, event - bisect.bisect_left(dropped, event), entry)
            for key, event, entry in self.ids
            if event not in events
        ]

    def extend(self, other: Processed, offset: int) -> None:
        """Add `other` (whose entry indexes start at `offset` here) to this result."""
        base = len(self.events)
        self.ids.extend((key, base + event, offset + entry) for key, event, entry in other.ids)
        self.events.extend(other.events)
        for index, exc in other.rejected:
            if len(self.rejected) < REPORTED_REJECTIONS:
                self.rejected.append((index + offset, exc))
        self.rejected_count += other.rejected_count
        for reason, count in other.rejected_reasons.items():
            self.rejected_reasons[reason] = self.rejected_reasons.get(reason, 0) + count
        self.filtered += other.filtered
        self.unstorable.extend(other.unstorable)
