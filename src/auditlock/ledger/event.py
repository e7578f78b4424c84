"""The audit event model: who, what, when, where (docs/FORMAT.md, "Events").

`AuditEvent` is the one model of an event, used for intake validation with precise errors
and as the source of docs/event-schema.json. The sidecar's hot loop uses the hand-written
`normalize_event` (normalize.py), which applies the same rules without pydantic; a
property test proves the two agree.

Optional members are omitted when absent (never `null`), so an event has one canonical
form.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from auditlock.ledger import vocabulary
from auditlock.ledger.errors import BAD_TYPE, BAD_VALUE, MISSING_FIELD, EventError
from auditlock.ledger.timestamps import normalize_time
from auditlock.ledger.values import (
    ValueProblem,
    check_json,
    check_short,
    normalize_ip,
    problem_code,
)
from auditlock.ledger.vocabulary import ID_PATTERN, ActorKind, Category, Outcome

Short = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(check_short)]
Time = Annotated[
    str,
    AfterValidator(normalize_time),
    Field(
        description="RFC 3339; stored as UTC with nine fraction digits and Z",
        examples=["2026-11-29T15:08:52.123456789Z"],
    ),
]
Ip = Annotated[str, AfterValidator(normalize_ip), Field(description="IPv4 or IPv6 address")]


def _check_details(value: dict[str, Any]) -> dict[str, Any]:
    try:
        check_json(value)
    except ValueProblem as exc:
        reason = f"{exc.path}: {exc.reason}" if exc.path else exc.reason
        raise ValueProblem(exc.path, reason, exc.code) from None
    return value


Details = Annotated[
    dict[str, Any],
    AfterValidator(_check_details),
    Field(
        description=(
            "Free-form JSON object. Integers only (|n| <= 2**53-1), no floats; member "
            "names within U+0000..U+FFFF; nested at most 16 levels."
        )
    ),
]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Actor(_Part):
    """Who did it."""

    kind: ActorKind
    name: Short
    ip: Ip | None = Field(default=None, description="source IP address of the request")


class Target(_Part):
    """What it was done to."""

    resource: Short
    namespace: Short | None = None
    name: Short | None = None


class Source(_Part):
    """Where the event was observed."""

    cluster: Short | None = None
    namespace: Short | None = None
    pod: Short | None = None
    container: Short | None = None
    node: Short | None = None


class Correlation(_Part):
    """Ids that line this event up with trails of other systems."""

    request_id: Short | None = None
    trace_id: Short | None = None


class AuditEvent(_Part):
    """One audit event, as accepted at intake and stored (canonicalized) in the ledger."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="auditlock event",
        json_schema_extra={"$id": "https://auditlock.io/schemas/event-v1.json"},
    )

    id: str = Field(pattern=ID_PATTERN, description="unique id of the event within its stream")
    time: Time
    category: Category
    action: Short = Field(description="what was done, e.g. get, exec, patch, delete")
    outcome: Outcome
    actor: Actor
    target: Target
    source: Source
    correlation: Correlation | None = None
    details: Details | None = None

    def to_dict(self) -> dict[str, Any]:
        """The normalized event dict (optional members omitted), ready for the writer."""
        return self.model_dump(mode="python", exclude_none=True)


def _check_vocabulary() -> None:
    """The members listed in vocabulary.py (what the fast checker uses) are the models'."""
    for model, members in (
        (AuditEvent, vocabulary.EVENT_MEMBERS),
        (Actor, vocabulary.ACTOR_MEMBERS),
        (Target, vocabulary.TARGET_MEMBERS),
        (Source, vocabulary.SOURCE_MEMBERS),
        (Correlation, vocabulary.CORRELATION_MEMBERS),
    ):
        fields = tuple(model.model_fields)
        if fields != members:
            raise RuntimeError(f"{model.__name__} has members {fields}, vocabulary.py {members}")


_check_vocabulary()


def validate_event(raw: Any) -> dict[str, Any]:
    """Validate with the model; return the normalized dict or raise EventError (all problems)."""
    try:
        return AuditEvent.model_validate(raw).to_dict()
    except ValidationError as exc:
        errors = exc.errors()
        raise EventError([_problem(err) for err in errors], _code(errors[0])) from None


def _code(err: Any) -> str:
    kind = str(err["type"])
    if kind == "missing":
        return MISSING_FIELD
    if kind.endswith("_type"):
        return BAD_TYPE
    cause = (err.get("ctx") or {}).get("error")
    return problem_code(cause) if isinstance(cause, ValueError) else BAD_VALUE


def _problem(err: Any) -> tuple[str, str]:
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(err["msg"])
    return path, message.removeprefix("Value error, ")


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema published as docs/event-schema.json."""
    return AuditEvent.model_json_schema()
