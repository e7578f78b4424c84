"""The per-line rules of docs/FORMAT.md sections 3-5 that byte comparisons cannot see.

verify.py checks each line's envelope bytes (prefix `{"epoch":E,"event":` and suffix
`,"prev":...,"seq":N,"stream":...}`), which pins epoch, position, chain and stream. What
sits between them must be exactly the canonical bytes of a valid event. `LineRules.check`
decides that for every line, fast:

1. decode the event bytes with a typed msgspec decoder built from the event vocabulary
   (vocabulary.py, values.py): exactly the allowed members with the allowed types, strings
   of 1..MAX_SHORT code points, no `null` for an absent member, integers within
   +-(2**53 - 1) and no floats in `details`, its nesting; it refuses malformed JSON,
   trailing bytes (an extra envelope member) and lone surrogates;
2. check what a type cannot say, once per segment: the id pattern and the stored time
   shape (one regex call over the joined values), real calendar dates and canonical IP
   texts (once per distinct value), and, only when the bytes hold characters above
   U+FFFF, that no `details` member name does (values.check_json);
3. re-encode canonically and compare bytes: this catches member order, escapes,
   whitespace, `-0`, and duplicate member names (the decoder keeps one of them, so the
   re-encoding is shorter; first-wins and last-wins parsers would read different events).

A line failing any step is diagnosed slowly, with the pydantic model of event.py naming
the member, so the reason an auditor reads comes from the same rules as intake's.

`id` uniqueness: the source assigns ids and the writer cannot remember every id of a
stream, so a repeat is reported as a warning (`duplicate-id`), never a failure. The ids
of a stream are kept in bounded memory (seen_ids.py).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.errors import EventError
from auditlock.ledger.lines import PREV_MARK
from auditlock.ledger.normalize import plain_json
from auditlock.ledger.seen_ids import SeenIds
from auditlock.ledger.timestamps import normalize_time
from auditlock.ledger.typed_json import (
    TYPED_DEPTH,
    Correlation,
    Short,
    Target,
    has_astral,
    json_values,
)
from auditlock.ledger.values import MAX_DEPTH, ValueProblem, check_json, normalize_ip
from auditlock.ledger.vocabulary import ID_PATTERN, ActorKind, Category, Outcome

# (seq, code, message): what `check` reports for one line.
Problem = tuple[int, str, str]
Report = Callable[[int, str, str], None]

# `id` and `time` patterns are checked for a whole segment at once (one regex call over
# the joined values): per-value pattern constraints in the decoder cost more than the
# JSON parsing itself.
_ID = ID_PATTERN.removeprefix("^").removesuffix("$")
_IDS = re.compile(f"(?:{_ID}\n)*{_ID}\\Z")
_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z"
_TIMES = re.compile(f"(?:{_TIME}\n)*{_TIME}\\Z")
if TYPE_CHECKING:
    _Details = dict[str, Any]
else:
    _Details = dict[str, json_values(TYPED_DEPTH - 1)]


# Fields in sorted order, so the encoder writes RFC 8785 member order without sorting.
class _Actor(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    ip: Short | UnsetType = UNSET
    kind: ActorKind
    name: Short


class _Source(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    cluster: Short | UnsetType = UNSET
    container: Short | UnsetType = UNSET
    namespace: Short | UnsetType = UNSET
    node: Short | UnsetType = UNSET
    pod: Short | UnsetType = UNSET


class _Event(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    action: Short
    actor: _Actor
    category: Category
    correlation: Correlation | UnsetType = UNSET
    details: _Details | UnsetType = UNSET
    id: str
    outcome: Outcome
    source: _Source
    target: Target
    time: str


class _LooseEvent(_Event, forbid_unknown_fields=True, kw_only=True, gc=False):
    details: dict[str, Any] | UnsetType = UNSET


_decode = msgspec.json.Decoder(_LooseEvent).decode
_decode_list = msgspec.json.Decoder(list[_Event]).decode
_encode = msgspec.json.Encoder(order="sorted").encode
_ENVELOPE = frozenset(("epoch", "event", "prev", "seq", "stream"))


@functools.lru_cache(maxsize=4096)
def _ip_is_canonical(text: str) -> bool:
    try:
        return normalize_ip(text) == text
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def _second_is_valid(text: str) -> bool:
    """`YYYY-MM-DDTHH:MM:SS` of a time already shaped like the stored form is real."""
    try:
        return normalize_time(text + ".000000000Z") == text + ".000000000Z"
    except ValueError:
        return False


def _details_ok(details: dict[str, Any]) -> bool:
    if plain_json(details, 0):  # the common case: ASCII, small integers, shallow
        return True
    try:
        check_json(details)
    except ValueProblem:
        return False
    return True


class LineRules:
    """Checks the event inside each line; remembers the ids of the current stream
    (seen_ids.py: bounded memory; repeats far apart are reported by `end_stream`)."""

    def __init__(self, run_ids: int | None = None) -> None:
        self._stream: str | None = None
        self._ids = SeenIds(run_ids)

    def end_stream(self) -> None:
        """The current stream is done: report its repeats across runs (`warn` of the
        segment each repeat is in) and forget its ids."""
        self._ids.finish()
        self._stream = None

    def check(
        self,
        stream: str,
        lines: Sequence[bytes],
        first_seq: int,
        prefix_len: int,
        find: Report,
        warn: Report,
    ) -> list[Any]:
        """Check lines[i] (seq first_seq + i); `find` problems, `warn` repeated ids.
        Returns each line's decoded `details` (None when absent or undecodable), which
        verify uses to say who observed the event (observer.py) without decoding twice.

        Lines without the envelope's `,"prev":"` marker are left to verify's structural
        diagnosis; streams must come one after the other (ids are kept per stream)."""
        if stream != self._stream:
            self._ids.finish()
            self._stream = stream
        if not lines:
            return []
        self._ids.segment(warn)
        # Fast path, the whole segment at once: the events joined as one JSON array are
        # decoded in one call and re-encoded in one call; equal bytes mean every event is
        # canonical and well-typed. Any doubt: line by line, to name the line.
        ends = [line.rfind(PREV_MARK) for line in lines]
        if min(ends) >= prefix_len:
            events = [ln[prefix_len:e] for ln, e in zip(lines, ends, strict=True)]
            joined = b"[" + b",".join(events) + b"]"
            try:
                parsed = _decode_list(joined)
            except (msgspec.MsgspecError, RecursionError):  # RecursionError: hostile nesting
                parsed = []
            if (
                len(parsed) == len(lines)
                and _encode(parsed) == joined
                and _valid(parsed, check_details=has_astral(joined))
                and self._ids.all_new([p.id for p in parsed], first_seq)
            ):
                return [p.details for p in parsed]
        return self._check_slowly(lines, first_seq, prefix_len, find, warn)

    def _check_slowly(
        self, lines: Sequence[bytes], seq: int, prefix_len: int, find: Report, warn: Report
    ) -> list[Any]:
        ids = self._ids
        details: list[Any] = []
        for line in lines:
            end = line.rfind(PREV_MARK)
            if end < prefix_len:
                seq += 1
                details.append(None)
                continue
            event = line[prefix_len:end]
            parsed: _Event | None
            try:
                parsed = _decode(event)
                ok = _encode(parsed) == event and _valid([parsed], check_details=True)
            except (msgspec.MsgspecError, RecursionError):  # RecursionError: hostile nesting
                parsed, ok = None, False
            if not ok:
                problem = diagnose(line, event)
                if problem is not None:
                    find(seq, *problem)
            if parsed is not None and ids.seen(parsed.id, seq):
                warn(seq, "duplicate-id", f"event id {parsed.id!r} was used before")
            details.append(parsed.details if parsed is not None else None)
            seq += 1
        return details


def _valid(events: Sequence[_Event], *, check_details: bool) -> bool:
    """The rules the types cannot express, for decoded events (one regex call per rule
    for all of them). `check_details`: walk `details` with check_json; needed when it was
    decoded untyped, or when the bytes hold characters above U+FFFF, which may be in a
    member name (refused) rather than in a value (allowed)."""
    if not _IDS.match("\n".join([e.id for e in events])):
        return False
    times = [e.time for e in events]
    if not _TIMES.match("\n".join(times)):
        return False
    if not all(map(_second_is_valid, {t[:19] for t in times})):
        return False
    ips = {e.actor.ip for e in events}
    ips.discard(UNSET)
    if not all(map(_ip_is_canonical, ips)):
        return False
    if check_details:
        return all(_details_ok(d) for e in events if not isinstance(d := e.details, UnsetType))
    return True


def diagnose(line: bytes, event: bytes) -> tuple[str, str] | None:
    """(code, reason) of a line whose event failed the fast check, from the plain reading
    of FORMAT.md (json, the pydantic model, RFC 8785 bytes); None if that reading finds
    nothing wrong, so a fast-path quirk never becomes a false finding (a property test
    holds the two readings together)."""
    try:
        envelope = json.loads(line, object_pairs_hook=_no_duplicates)
    except _DuplicateMember as dup:
        return "line-not-canonical", (
            f"member {dup.name!r} appears twice in one object (JSON parsers disagree which "
            "one counts)"
        )
    except RecursionError:
        return "event-invalid", f"nested far deeper than {MAX_DEPTH} levels"
    except ValueError:
        return "line-not-canonical", "the event is not a single JSON value"
    if not isinstance(envelope, dict) or envelope.keys() != _ENVELOPE:
        extra = sorted(envelope.keys() - _ENVELOPE) if isinstance(envelope, dict) else []
        what = f"extra member {extra[0]!r}" if extra else "not the envelope of section 5"
        return "line-not-canonical", f"line is not the canonical envelope ({what})"
    from auditlock.ledger.event import validate_event  # pydantic: only when a line is bad

    raw = envelope["event"]
    if not isinstance(raw, dict):
        return "event-invalid", "event: an event must be a JSON object"
    details = raw.get("details")
    if isinstance(details, dict):  # first, for a message naming the member's full path
        try:
            check_json(details)
        except ValueProblem as exc:
            return "event-invalid", f"details{'.' if exc.path else ''}{exc.path}: {exc.reason}"
    try:
        stored = validate_event(raw)
    except EventError as exc:
        path, reason = exc.problems[0]
        return "event-invalid", f"{path or 'event'}: {reason}"
    if stored != raw:
        return "event-invalid", f"{_first_difference(raw, stored)} is not in its stored form"
    if canonical_bytes(stored) != event:
        return "line-not-canonical", (
            "event bytes are not its RFC 8785 form (member order, escapes or whitespace)"
        )
    return None


class _DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateMember(key)
        out[key] = value
    return out


def _first_difference(raw: Any, stored: Any, path: str = "") -> str:
    """The path of the first member where the stored form differs from what is there."""
    if isinstance(raw, dict) and isinstance(stored, dict):
        for key in sorted(raw.keys() | stored.keys()):
            if raw.get(key, UNSET) != stored.get(key, UNSET):
                where = f"{path}.{key}" if path else key
                if raw.get(key) is None:
                    return f"{where} (null: an absent member is omitted)"
                return _first_difference(raw.get(key), stored.get(key), where)
    return path or "event"
