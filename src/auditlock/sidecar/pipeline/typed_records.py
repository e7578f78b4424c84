"""A sender's record and the event made of it, as msgspec types: the hot path's schema.

A PackedForward span of records in the common shape is decoded in one C call into
`Record` structs, which checks while decoding what the normalizer's fast path would
check member by member: the known members' types, lengths and closed sets
(vocabulary.py), the values of `details` and of every other member in the ledger's value
space (typed_json.py: valid strings, safe integers, no floats or binary, bounded
nesting). The normalizer (`Normalizer.typed`) then assembles `Event` structs from them,
and a batch of events becomes its canonical lines in one encoder call
(`canonical.canonical_lines`). So the per-member Python work of the dict path (reading,
checking and placing each member) leaves the hot path.

A struct drops the members it does not declare, and a sender's flat members (anything
but the known ones, which the normalizer moves into `details`) have names of the
sender's choosing. So `Record` forbids unknown members, and `RecordTypes` learns them: a
span that names members no field declares is decoded once more as maps of raw values,
the new names become fields (up to MAX_EXTRAS), and the span is decoded again. A sender
sends the same few names again and again, so this happens once per name.

Anything these types refuse (a member of another type, a float, a name never learned
beyond MAX_EXTRAS) is not an error here: the span then takes the dict decoder and the
normalizer's general path, which name any problem. The types only ever accept what the
general path accepts and turns into the same event: tests/unit/test_sidecar_typed_records.py
checks this with hypothesis against the general path and the ledger's pydantic model.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from auditlock.ledger.typed_json import TYPED_DEPTH, Correlation, Short, Target, json_values
from auditlock.ledger.vocabulary import (
    ACTOR_MEMBERS,
    CATEGORIES,
    CORRELATION_MEMBERS,
    EVENT_MEMBERS,
    OUTCOMES,
    TARGET_MEMBERS,
    ActorKind,
    Category,
    Outcome,
)

JsonValue: Any = json_values(TYPED_DEPTH)  # a type built at run time

# Member names msgspec cannot declare as a field's encoded name.
_UNNAMEABLE = re.compile(r'[\\"\x00-\x1f]')
# Flat member names learned at most: each is a field every record of the span is
# decoded against, and a sender could otherwise grow the type without bound.
MAX_EXTRAS = 32


# The structs an event is made of declare their fields in sorted order: the encoder
# writes them in that order (canonical.py), so that is the canonical member order.


class Actor(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, gc=False):
    """The event's actor as sent and as stored: the normalizer fills in `kind` and the
    canonical `ip`; an absent or null `ip` is not stored."""

    ip: str | None = None
    kind: ActorKind | UnsetType = UNSET
    name: Short


# A record's known members: what the normalizer maps itself (normalize.py's _KNOWN).
# Null is accepted where the normalizer reads null as absent, and nowhere else.
_RECORD_FIELDS: list[tuple[str, Any, Any]] = [
    ("id", str | None, None),
    ("time", str | None, None),
    ("category", Category | None, None),
    ("action", Short, msgspec.NODEFAULT),
    ("outcome", Outcome | UnsetType, UNSET),
    ("actor", Short | Actor, msgspec.NODEFAULT),
    ("target", Short | Target, msgspec.NODEFAULT),
    ("source", JsonValue | UnsetType, UNSET),  # the collector's own identity is stored
    ("correlation", Correlation | None, None),
    ("details", dict[str, JsonValue] | None, None),
    ("request_id", Short | None, None),
    ("trace_id", Short | None, None),
]
KNOWN_MEMBERS = frozenset(name for name, _, _ in _RECORD_FIELDS)


class Event(Struct, gc=False):
    """An event as the ledger stores it (docs/FORMAT.md, "Events"); `correlation` UNSET
    is absent. `source` and `details.intake` are shared between events: never mutated."""

    action: str
    actor: Actor
    category: str
    correlation: Correlation | UnsetType
    details: dict[str, Any]
    id: str
    outcome: str
    source: dict[str, str]
    target: Target
    time: str


def _check_vocabulary() -> None:
    """The struct types name exactly the event's members (vocabulary.py, which the pydantic
    model is checked against): a member added there and not here fails at import."""
    pairs = (
        (Event, EVENT_MEMBERS),
        (Actor, ACTOR_MEMBERS),
        (Target, TARGET_MEMBERS),
        (Correlation, CORRELATION_MEMBERS),
    )
    for struct, members in pairs:
        fields = struct.__struct_fields__
        if set(fields) != set(members) or list(fields) != sorted(fields):
            raise RuntimeError(f"{struct.__name__} does not declare exactly {members}, sorted")
    if not {*EVENT_MEMBERS, *CORRELATION_MEMBERS} <= KNOWN_MEMBERS:
        raise RuntimeError("Record does not declare every member of the event")
    literals = ((Category, CATEGORIES), (Outcome, OUTCOMES))
    for literal, values in literals:
        if literal.__args__ != values:  # type: ignore[attr-defined]
            raise RuntimeError(f"{literal} is not {values}")


_check_vocabulary()


@functools.lru_cache(maxsize=4)  # building one takes ~20 ms (the nested value types)
def _decoder(extras: tuple[tuple[str, str], ...]) -> msgspec.msgpack.Decoder[Any]:
    """A decoder of spans of `[EventTime, Record]` entries, `Record` declaring `extras`."""
    fields: list[Any] = list(_RECORD_FIELDS)
    rename = {}
    for field, name in extras:
        fields.append((field, JsonValue | UnsetType, UNSET))
        rename[field] = name
    record: Any = msgspec.defstruct(
        "Record", fields, rename=rename, forbid_unknown_fields=True, kw_only=True, gc=False
    )
    # The stamp stays raw bytes: protocol.py checks and reads all of a span's at once.
    return msgspec.msgpack.Decoder(list[tuple[msgspec.Raw, record]])


class RecordTypes:
    """The current `Record` type (known members + the flat members learned so far) and a
    decoder of spans of `[EventTime, Record]` entries for it.

    A sender whose spans do not fit (a member of another type in every span, more flat
    member names than are learned) would pay for a failed decode each time: after a
    declined span the next 2, 4, ... up to 64 spans are declined without a try, until
    one fits again."""

    def __init__(self) -> None:
        self.extras: tuple[tuple[str, str], ...] = ()  # (field, member name)
        self._names: set[str] = set()
        self._declined = 0  # spans declined in a row
        self._skip = 0  # spans still to decline without a try
        self.decoder = self._build()
        self._keys = msgspec.msgpack.Decoder(list[tuple[Any, dict[str, msgspec.Raw]]])

    def _build(self) -> msgspec.msgpack.Decoder[Any]:
        return _decoder(self.extras)

    def learn(self, array: bytes) -> bool:
        """Add the member names of the span's records that no field declares; False when
        there are none (the span was refused for another reason) or too many."""
        try:
            entries = self._keys.decode(array)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        new: set[str] = set()
        known = KNOWN_MEMBERS
        names = self._names
        for _, record in entries:
            if not record.keys() <= known:
                new.update(name for name in record if name not in known and name not in names)
        if not new or len(names) + len(new) > MAX_EXTRAS or any(map(_UNNAMEABLE.search, new)):
            return False
        extras = list(self.extras)
        for name in sorted(new):
            # Field names of our own: a member name need not be a Python identifier.
            field = f"x{len(extras)}"
            extras.append((field, name))
        self.extras = tuple(extras)
        names.update(new)
        self.decoder = self._build()
        return True

    def decode(self, array: bytes) -> list[Any] | None:
        """The entries of `array` (a msgpack array of entries), or None when a record does
        not fit the types even after learning its member names (or after a decline, see
        the class doc)."""
        if self._skip:
            self._skip -= 1
            return None
        for _ in range(2):
            try:
                items: list[Any] = self.decoder.decode(array)
            except msgspec.ValidationError:
                if self.learn(array):
                    continue
            except msgspec.DecodeError:
                pass
            else:
                self._declined = 0
                return items
            break
        self._declined += 1
        self._skip = 1 << min(self._declined, 6)
        return None


class TypedRecords(list[tuple[Any, Any]]):
    """Entries of one tag decoded by `RecordTypes`: (EventTime stamp, Record) pairs, with
    their times (`stamps`: seconds and nanoseconds of each entry in turn), the learned
    flat members when they were decoded (`extras`), and `general(index)`: the entry's
    record as the entry-by-entry decoder reads it (a dict), for the records the
    normalizer leaves to its general path."""

    def __init__(
        self,
        items: list[tuple[Any, Any]],
        tag: str,
        stamps: tuple[int, ...],
        extras: tuple[tuple[str, str], ...],
        general: Any,
    ) -> None:
        super().__init__(items)
        self.tag = tag
        self.stamps = stamps
        self.extras = extras
        self.general = general

    def time_ns(self, index: int) -> int:
        """Entry `index`'s time in ns since the epoch."""
        return self.stamps[2 * index] * 1_000_000_000 + self.stamps[2 * index + 1]
