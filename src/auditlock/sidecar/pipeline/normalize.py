"""Normalize: a raw record from any source → one audit event in the ledger's model.

The event model is the ledger's (`auditlock.ledger.event.AuditEvent`, docs/FORMAT.md):
id, time, category, action, outcome, actor {kind, name, ip}, target {resource,
namespace, name}, source {cluster, namespace, pod, container, node}, correlation
{request_id, trace_id}, details {...}.

What senders may write (Forward record or HTTP JSON object), and what the sidecar adds:

    category   required, in the record or as the last part of the Forward tag
               (`fluent-logger` tag `app.access` → access)
    action     required
    outcome    success | failure | unknown (default unknown)
    actor      required: {"kind", "name", "ip"} or a bare name (kind user)
    target     required: {"resource", "namespace", "name"} or a bare resource
    time       optional RFC 3339; else the Forward entry time / the arrival time
    id         optional; else the sidecar assigns `<boot id>-<counter>`, unique per stream
    request_id, trace_id or correlation {...}
    details    optional object; every other member of the record is added to it

The sidecar fills `source` from its own identity (downward API) and records the intake
channel in details.intake {"input", "tag"}. Floats are not allowed in ledger events
(canonical bytes must be unambiguous), so float values in details become their decimal
string; binary values that are UTF-8 text become strings. This runs once per event on
the hot path: plain dict code here, the ledger's own fast checker after it (given the
members one by one: no intermediate event dict). The identity
is checked by the ledger once at start (`check_source`) and the checked object is shared
by every event, so the per-event check skips it (an identity the ledger refuses is not
pre-checked: then every event is refused with the ledger's reason).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any

from msgspec import UNSET

from auditlock.ledger.canonical import MAX_SAFE_INTEGER
from auditlock.ledger.errors import EventError
from auditlock.ledger.normalize import (
    ACTOR_KIND_SET,
    CORRELATION_MEMBER_SET,
    ID_RE,
    TARGET_MEMBER_SET,
    canonical_time_second,
    check_source,
    normalize_members,
    plain_json,
)
from auditlock.ledger.normalize import cached_ip as _cached_ip
from auditlock.ledger.timestamps import normalize_time
from auditlock.ledger.typed_json import Correlation, Target
from auditlock.ledger.values import MAX_SHORT, ValueProblem, check_json
from auditlock.ledger.vocabulary import (
    ACTOR_MEMBERS,
    CATEGORIES,
    CORRELATION_MEMBERS,
    EVENT_MEMBERS,
    OUTCOMES,
)
from auditlock.sidecar.config import SourceIdentity
from auditlock.sidecar.pipeline.observers import (
    APP_INPUTS,
    RESERVED_ACTOR_NAMES,
    RESERVED_DETAILS,
    RESERVED_ID_PREFIXES,
    RESERVED_TAG_PREFIXES,
    ReservedIdentity,
    check_app_event,
)
from auditlock.sidecar.pipeline.recent_ids import RecentIds, id_key
from auditlock.sidecar.pipeline.typed_records import Actor, Event, TypedRecords

_CATEGORY_SET = frozenset(CATEGORIES)
# Members of a record the normalizer maps itself; every other one goes into details.
_KNOWN = frozenset((*EVENT_MEMBERS, *CORRELATION_MEMBERS))
_OUTCOME_SET = frozenset(OUTCOMES)
_ACTOR_SET = frozenset(ACTOR_MEMBERS)


class Rejected(Exception):
    """An event that cannot enter the trail: `reason` is a metric label, `field` a path."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


class _Decline(Exception):
    """A typed record the typed path leaves to the general path (raised and caught in
    `Normalizer.typed`, never seen outside it)."""


class Oversized:
    """A record a source did not decode because it is too large (its size in bytes);
    the normalizer rejects it (`too_large`)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class _TimeFormatter:
    """ns → RFC 3339 with nine fraction digits; caches the per-second prefix."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, time_ns: int) -> str:
        second, nanos = divmod(time_ns, 1_000_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{nanos:09d}Z"

    at = __call__  # a plain method: cheaper to call than the instance


def coerce_details(value: Any, depth: int = 0) -> Any:
    """Floats → decimal strings, UTF-8 bytes → str, tuples → lists (in place for containers)."""
    kind = type(value)
    if kind is dict:
        if depth < 32:
            for key, item in value.items():
                sub = type(item)
                if sub is float or sub is bytes or sub is dict or sub is list:
                    value[key] = coerce_details(item, depth + 1)
        return value
    if kind is list:
        if depth < 32:
            for index, item in enumerate(value):
                sub = type(item)
                if sub is float or sub is bytes or sub is dict or sub is list:
                    value[index] = coerce_details(item, depth + 1)
        return value
    if kind is float:
        return repr(value)
    if kind is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected("invalid_utf8", "details", "binary value is not UTF-8 text") from None
    return value


class Normalizer:
    def __init__(
        self,
        identity: SourceIdentity,
        recent_ids: RecentIds | None = None,
        observer_tag_prefix: str | None = None,
    ) -> None:
        self._recent = recent_ids
        self._observer_tag_prefix = observer_tag_prefix
        # The key of the last accepted event's sender-chosen id (None: assigned by us).
        self.sender_key: int | None = None
        self._source = {key: value for key, value in dataclasses.asdict(identity).items() if value}
        self._checked_source: dict[str, Any] | None = None
        # An identity the ledger refuses stays unchecked: each event is refused with the
        # ledger's reason for it.
        with contextlib.suppress(EventError):
            self._source = self._checked_source = check_source(self._source)
        self._format_time = _TimeFormatter()
        self._boot = os.urandom(6).hex()
        self._boot_prefix = f"{self._boot}-"
        self._counter = 0
        self._intakes: dict[tuple[str, str], tuple[dict[str, str], bool]] = {}
        self._tag_categories: dict[str, str] = {}

    def _intake(self, input_name: str, tag: str) -> tuple[dict[str, str], bool]:
        """details.intake, shared between events of one (input, tag): never mutated; and
        whether the ledger accepts it (checked here once, not on every event)."""
        key = (input_name, tag)
        found = self._intakes.get(key)
        if found is None:
            intake = {"input": input_name, "tag": tag}
            try:
                check_json(intake)
                found = (intake, True)
            except ValueProblem:
                found = (intake, False)
            if len(self._intakes) < 1024:  # tags come from clients: bound the cache
                self._intakes[key] = found
        return found

    def fast(
        self, input_name: str, tag: str, time_ns: int, record: Any, checked: bool = False
    ) -> dict[str, Any] | None:
        """What `self(...)` returns for `record`, when the record has the common shape:
        known members of the expected types, plain ASCII strings, safe integers, a tag
        whose category and intake are known; None when unsure, and then `self(...)`
        decides and names any problem. It only ever accepts, so every rejection and its
        message still come from one place; tests/unit/test_sidecar_pipeline_fast.py
        checks with hypothesis that both give the same event whenever this one accepts.

        One function with the checks written inline: it runs once per event, and the
        general path's helper calls cost more than the checks themselves.

        `checked`: a typed decoder already checked the record's values (Forward's
        TypedBatch: valid strings, safe integers, no floats or binary, bounded nesting),
        so only what it cannot say is checked here; the caller still checks the event's
        bytes for member names above U+FFFF (`has_astral`).
        """
        if type(record) is not dict:
            return None
        source = self._checked_source
        if source is None:
            return None
        get = record.get
        category = get("category")
        if category is None:
            category = self._tag_categories.get(tag)
            if category is None:
                return None
        elif type(category) is not str or category not in _CATEGORY_SET:
            return None
        action = get("action")
        if type(action) is not str or not 0 < len(action) <= MAX_SHORT:
            return None
        if not checked and not action.isascii():
            return None
        outcome = get("outcome", "unknown")
        if type(outcome) is not str or outcome not in _OUTCOME_SET:
            return None

        actor = get("actor")
        if type(actor) is str:
            kind: Any = "user"
            name: Any = actor
            ip: Any = None
        elif type(actor) is dict and actor.keys() <= _ACTOR_SET:
            if "kind" in actor:
                kind = actor["kind"]
                if type(kind) is not str or kind not in ACTOR_KIND_SET:
                    return None
            else:
                kind = "user"
            name = actor.get("name")
            ip = actor.get("ip")
        else:
            return None
        if type(name) is not str or not 0 < len(name) <= MAX_SHORT:
            return None
        if not checked and not name.isascii():
            return None
        if ip is None:
            actor_out = {"kind": kind, "name": name}
        else:
            if type(ip) is not str:
                return None
            try:
                actor_out = {"kind": kind, "name": name, "ip": _cached_ip(ip)}
            except ValueError:
                return None

        target = get("target")
        if type(target) is str:
            if not 0 < len(target) <= MAX_SHORT or not (checked or target.isascii()):
                return None
            target_out = {"resource": target}
        elif type(target) is dict and "resource" in target and target.keys() <= TARGET_MEMBER_SET:
            for value in target.values():
                if (
                    type(value) is not str
                    or not 0 < len(value) <= MAX_SHORT
                    or not (checked or value.isascii())
                ):
                    return None
            target_out = dict(target)
        else:
            return None

        correlation = get("correlation")
        request_id = get("request_id")
        trace_id = get("trace_id")
        if request_id is not None or trace_id is not None:
            correlation = dict(correlation) if type(correlation) is dict else {}
            if request_id is not None:
                correlation["request_id"] = request_id
            if trace_id is not None:
                correlation["trace_id"] = trace_id
        elif correlation is not None:
            if type(correlation) is not dict:
                return None
            correlation = dict(correlation)
        if correlation is not None:
            if not correlation.keys() <= CORRELATION_MEMBER_SET:
                return None
            for value in correlation.values():
                if (
                    type(value) is not str
                    or not 0 < len(value) <= MAX_SHORT
                    or not (checked or value.isascii())
                ):
                    return None

        details = get("details")
        if details is None:
            details = {}
        elif type(details) is dict:
            details = dict(details)
        else:
            return None
        if not record.keys() <= _KNOWN:
            for key in record:
                if key not in _KNOWN:
                    details[key] = record[key]
        details.pop("intake", None)
        for key, value in () if checked else details.items():
            if type(key) is not str or not key.isascii():
                return None
            kind = type(value)
            if kind is str:
                if not value.isascii():
                    return None
            elif kind is int:
                if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                    return None
            elif kind is dict or kind is list:
                if not plain_json(value, 1):
                    return None
            elif kind is not bool and value is not None:
                return None  # floats and bytes are coerced by the general path

        event_id = get("id")
        sender_key = None
        if event_id is not None:
            if type(event_id) is not str or not ID_RE.match(event_id):
                return None
            if self._recent is not None:
                if event_id.startswith(self._boot_prefix):
                    return None
                sender_key = id_key(event_id)
                if sender_key in self._recent:
                    return None
        when = get("time")
        if when is None:
            when = self._format_time.at(time_ns)
        elif not (
            type(when) is str
            and len(when) == 30
            and when[:20] == canonical_time_second[0]
            and when[29] == "Z"
            and when.isascii()
            and when[20:29].isdigit()
        ):
            return None
        if (
            input_name in APP_INPUTS
            and not (self._observer_tag_prefix and tag.startswith(self._observer_tag_prefix))
            and (
                tag.startswith(RESERVED_TAG_PREFIXES)
                or name in RESERVED_ACTOR_NAMES
                or not details.keys().isdisjoint(RESERVED_DETAILS)
                or (event_id is not None and event_id.startswith(RESERVED_ID_PREFIXES))
            )
        ):
            return None
        intake, intake_checked = self._intakes.get((input_name, tag)) or self._intake(
            input_name, tag
        )
        if not intake_checked:
            return None

        if event_id is None:
            self._counter += 1
            event_id = f"{self._boot}-{self._counter}"
        self.sender_key = sender_key
        details["intake"] = intake
        out = {
            "id": event_id,
            "time": when,
            "category": category,
            "action": action,
            "outcome": outcome,
            "actor": actor_out,
            "target": target_out,
            "source": source,
        }
        if correlation is not None:
            out["correlation"] = correlation
        out["details"] = details
        return out

    def typed(
        self, input_name: str, records: TypedRecords
    ) -> tuple[list[Any], list[tuple[int, int]], bool]:
        """The events of records a typed decoder read (typed_records.py), in order: an
        `Event` for each record of the common shape, and for any other what `self(...)`
        makes of it (an event dict, or the `Rejected` it raises). Also the sender-chosen
        ids' keys with their record's index, and whether every record was of the common
        shape (no dicts or rejections among the results).

        The decoder already checked what `fast` checks member by member (types, lengths,
        closed sets, the value space); what is left is what depends on the collector's
        state: the tag's category, ids seen before, times, reserved identities. One loop
        over the batch with the checks inline, as in `fast`.
        tests/unit/test_sidecar_typed_records.py checks with hypothesis that both paths
        give the same events.
        """
        tag = records.tag
        source = self._checked_source
        intake, intake_checked = self._intakes.get((input_name, tag)) or self._intake(
            input_name, tag
        )
        app = input_name in APP_INPUTS and not (
            self._observer_tag_prefix and tag.startswith(self._observer_tag_prefix)
        )
        usable = source is not None and intake_checked
        if app and tag.startswith(RESERVED_TAG_PREFIXES):
            usable = False
        tag_category = self._tag_categories.get(tag)
        stamps = records.stamps
        extras = records.extras
        recent = self._recent
        boot_prefix = self._boot_prefix
        format_time = self._format_time
        second = format_time._second  # the formatter's cache, read inline below
        second_prefix = format_time._prefix
        boot = self._boot
        counter = self._counter
        canonical_second = canonical_time_second
        cached_ip = _cached_ip
        events: list[Any] = []
        append = events.append
        keys: list[tuple[int, int]] = []
        clean = True
        for index, (_, record) in enumerate(records):
            event: Any = None
            if usable:
                try:
                    category = record.category
                    if category is None:
                        category = tag_category
                        if category is None:
                            raise _Decline
                    actor = record.actor
                    if type(actor) is str:
                        actor = Actor(kind="user", name=actor)
                    else:
                        if actor.kind is UNSET:
                            actor.kind = "user"
                        if actor.ip is not None:
                            actor.ip = cached_ip(actor.ip)  # ValueError: not an address
                    target = record.target
                    if type(target) is str:
                        target = Target(resource=target)
                    correlation = record.correlation
                    request_id = record.request_id
                    trace_id = record.trace_id
                    if request_id is not None or trace_id is not None:
                        if correlation is None:
                            correlation = Correlation()
                        if request_id is not None:
                            correlation.request_id = request_id
                        if trace_id is not None:
                            correlation.trace_id = trace_id
                    elif correlation is None:
                        correlation = UNSET
                    details = record.details
                    if details is None:
                        details = {}
                    for field, name in extras:
                        value = getattr(record, field)
                        if value is not UNSET:
                            details[name] = value
                    if "intake" in details:
                        del details["intake"]
                    event_id = record.id
                    sender_key = None
                    if event_id is not None:
                        if not ID_RE.match(event_id):
                            raise _Decline
                        if recent is not None:
                            if event_id.startswith(boot_prefix):
                                raise _Decline
                            sender_key = id_key(event_id)
                            if sender_key in recent:
                                raise _Decline
                    when = record.time
                    if when is None:
                        at = stamps[2 * index]
                        if at != second:
                            format_time(at * 1_000_000_000)
                            second, second_prefix = at, format_time._prefix
                        when = f"{second_prefix}.{stamps[2 * index + 1]:09d}Z"
                    elif not (
                        len(when) == 30
                        and when[:20] == canonical_second[0]
                        and when[29] == "Z"
                        and when.isascii()
                        and when[20:29].isdigit()
                    ):
                        raise _Decline
                    if app and (
                        actor.name in RESERVED_ACTOR_NAMES
                        or not details.keys().isdisjoint(RESERVED_DETAILS)
                        or (event_id is not None and event_id.startswith(RESERVED_ID_PREFIXES))
                    ):
                        raise _Decline
                    outcome = record.outcome
                    if event_id is None:
                        counter += 1
                        event_id = f"{boot}-{counter}"
                    elif sender_key is not None:
                        keys.append((sender_key, index))
                    details["intake"] = intake
                    event = Event(
                        record.action,
                        actor,
                        category,
                        correlation,
                        details,
                        event_id,
                        "unknown" if outcome is UNSET else outcome,
                        source,  # type: ignore[arg-type]
                        target,
                        when,
                    )
                except (_Decline, ValueError):
                    event = None
            if event is None:
                clean = False
                self._counter = counter  # the general path assigns the next id
                try:
                    event = self(input_name, tag, records.time_ns(index), records.general(index))
                except Rejected as exc:
                    event = exc
                else:
                    if self.sender_key is not None:
                        keys.append((self.sender_key, index))
                # The general path learns a tag's category from its first event.
                tag_category = self._tag_categories.get(tag)
                counter = self._counter
            append(event)
        self._counter = counter
        return events, keys, clean

    def __call__(self, input_name: str, tag: str, time_ns: int, record: Any) -> dict[str, Any]:
        if type(record) is not dict:
            if type(record) is Oversized:
                raise Rejected(
                    "too_large", "record", f"a {record.size}-byte event is too large to decode"
                )
            raise Rejected("bad_record", "record", "record must be a JSON object / msgpack map")
        category = record.get("category")
        if category is None:
            category = self._tag_categories.get(tag)
            if category is None:
                category = tag.rsplit(".", 1)[-1]
                if category in _CATEGORY_SET and len(self._tag_categories) < 1024:
                    self._tag_categories[tag] = category  # tags come from clients: bounded
            if category not in _CATEGORY_SET:
                raise Rejected(
                    "missing_field",
                    "category",
                    f"category is required (one of {', '.join(CATEGORIES)}), "
                    "in the record or as the tag's last part",
                )
        if "action" not in record and "id" not in record and "time" not in record:
            # The first problem the full check would name, found before any work: a
            # flood of bad records costs little more than reading it.
            raise Rejected("missing_field", "action", "action: missing (required)")
        self.sender_key = None
        event_id = record.get("id")
        if event_id is None:
            self._counter += 1
            event_id = f"{self._boot}-{self._counter}"
        elif type(event_id) is str and self._recent is not None:
            if event_id.startswith(self._boot_prefix):
                raise Rejected(
                    "reserved_id", "id", f"id {event_id[:80]!r} is one the collector assigns"
                )
            key = id_key(event_id)
            if key in self._recent:
                raise Rejected(
                    "duplicate_id",
                    "id",
                    f"id {event_id[:80]!r} was already used in this stream (the last "
                    f"{self._recent.window} ids are remembered)",
                )
            self.sender_key = key
        when = record.get("time")
        if when is None:
            when = self._format_time(time_ns)
        elif type(when) is str:
            try:
                when = normalize_time(when)
            except ValueError as exc:
                raise Rejected("bad_value", "time", f"time: {exc}") from None
        actor = record.get("actor")
        if type(actor) is str:
            actor = {"kind": "user", "name": actor}
        elif type(actor) is dict and "kind" not in actor and "name" in actor:
            actor = {"kind": "user", **actor}
        target = record.get("target")
        if type(target) is str:
            target = {"resource": target}
        correlation = record.get("correlation")
        request_id = record.get("request_id")
        trace_id = record.get("trace_id")
        if request_id is not None or trace_id is not None:
            correlation = dict(correlation) if type(correlation) is dict else {}
            if request_id is not None:
                correlation["request_id"] = request_id
            if trace_id is not None:
                correlation["trace_id"] = trace_id
        details = record.get("details")
        if details is not None and type(details) is not dict:
            raise Rejected("bad_type", "details", "details must be an object")
        details = dict(details) if details else {}
        for key in record:
            if key not in _KNOWN:
                details[key] = record[key]
        # details.intake is ours, checked once per (input, tag): it is set after coercion
        # and after the ledger check, which then need not walk it. A sender's own "intake"
        # member is replaced unseen, as it always was.
        details.pop("intake", None)
        if input_name in APP_INPUTS and not (
            self._observer_tag_prefix and tag.startswith(self._observer_tag_prefix)
        ):
            try:
                check_app_event(tag, actor, details, event_id)
            except ReservedIdentity as exc:
                raise Rejected("reserved_identity", exc.field, str(exc)) from None
        for value in details.values():
            kind = type(value)
            if kind is float or kind is bytes or kind is dict or kind is list:
                coerce_details(details)
                break
        intake, intake_checked = self._intake(input_name, tag)
        if not intake_checked:
            details["intake"] = intake  # the ledger check below names its problem
        try:
            out = normalize_members(
                event_id,
                when,
                category,
                record.get("action"),
                record.get("outcome", "unknown"),
                actor,
                target,
                self._source,
                correlation,
                details,
                self._checked_source,
            )
        except EventError as exc:
            path = exc.problems[0][0] if exc.problems else ""
            raise Rejected(exc.code, path or "event", str(exc)) from None
        if intake_checked:
            out["details"]["intake"] = intake  # the very `details` object checked above
        return out
