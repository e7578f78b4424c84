"""Event field paths a policy may name in `filters` and `redaction`.

A path that names nothing is dangerous in a WORM trail: a redaction path that misses
stores the secret under a lock nobody can lift, and an include rule on a missing field
drops every event. So paths are checked against the event model itself
(`auditlock.ledger.event.AuditEvent`, docs/FORMAT.md section 3), never a copy of it:

- a leaf member of the event (`action`, `actor.name`, `correlation.request_id`, ...), or
- a path under the free-form member (`details.attributes.card_number`): what an app
  sends beyond the schema is put there by the collector's normalize stage.

Redaction replaces a value with `[REDACTED]` after the event was validated, so only
fields where the marker is itself a valid value may be redacted (not `id`, `time`,
`category`, `outcome`, `actor.kind`, `actor.ip`): otherwise the stored event would
break the format.

The same rules run in two places with the same words: as CEL `x-kubernetes-validations`
in the generated CRD (the API server refuses `kubectl apply` with the message) and as
pydantic validators in the model (the operator's reconcile reports `InvalidSpec` for API
servers without CEL). See docs/operator.md, "Field paths".
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from auditlock.ledger.event import AuditEvent

MARKER = "[REDACTED]"  # what the collector's redaction stage writes (sidecar/pipeline/redact.py)
MAX_PATH_LENGTH = 256
MAX_PATHS = 64
EXAMPLE = "details.attributes.card_number"


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        choices = [a for a in get_args(annotation) if a is not type(None)]
        if len(choices) == 1:
            return choices[0]
    return annotation


def _leaf_annotations(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf path -> the type (with its constraints) that validates it."""
    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        inner = _unwrap_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            found.update(_leaf_annotations(inner, f"{prefix}{name}."))
        else:
            found[prefix + name] = Annotated[(inner, *info.metadata)] if info.metadata else inner
    return found


def _is_open(annotation: Any) -> bool:
    """A free-form object member (details): any path below it is valid."""
    base = get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation
    return base is dict or get_origin(base) is dict


def _marker_is_valid(annotation: Any) -> bool:
    try:
        TypeAdapter(annotation).validate_python(MARKER, strict=True)
    except ValidationError:
        return False
    return True


_LEAVES = _leaf_annotations(AuditEvent)
OPEN_MEMBERS: tuple[str, ...] = tuple(p for p, a in _LEAVES.items() if _is_open(a))
FIELD_PATHS: tuple[str, ...] = tuple(p for p, a in _LEAVES.items() if not _is_open(a))
REDACTABLE_PATHS: tuple[str, ...] = tuple(p for p in FIELD_PATHS if _marker_is_valid(_LEAVES[p]))
UNREDACTABLE_PATHS: tuple[str, ...] = tuple(p for p in FIELD_PATHS if p not in REDACTABLE_PATHS)
MEMBERS: tuple[str, ...] = tuple(AuditEvent.model_fields)

# RE2 and Python `re` agree on these: a non-empty segment after the open member, and
# a path whose first segment is an event member.
_OPEN_PATTERN = "^(" + "|".join(OPEN_MEMBERS) + r")([.][^.]+)+$"
_MEMBER_PATTERN = "^(" + "|".join(MEMBERS) + ")([.]|$)"
_UNDER = " or ".join(f"a path under {m}" for m in OPEN_MEMBERS)

UNKNOWN_TEXT = (
    f" is not an event field: name one of {', '.join(FIELD_PATHS)}, or {_UNDER} (e.g. {EXAMPLE})"
)
APP_FIELD_TEXT = (
    f"; fields an app sends beyond the event schema are stored under {OPEN_MEMBERS[0]}, "
    f"so this is probably {OPEN_MEMBERS[0]}."
)
UNREDACTABLE_TEXT = (
    f" cannot be redacted: {MARKER} is not a valid value of it, so the stored event would "
    f"break the format; redactable: {', '.join(REDACTABLE_PATHS)}, or {_UNDER}"
)


def path_problem(path: str) -> str | None:
    """Why `path` names no event field, or None when it does."""
    import re

    if path in FIELD_PATHS or re.match(_OPEN_PATTERN, path):
        return None
    text = path + UNKNOWN_TEXT
    if not re.match(_MEMBER_PATTERN, path):
        text += APP_FIELD_TEXT + path
    return text


def redaction_problem(path: str) -> str | None:
    """Why `path` cannot be a redaction path, or None when it can."""
    if path in UNREDACTABLE_PATHS:
        return path + UNREDACTABLE_TEXT
    return path_problem(path)


def check_path(path: str) -> str:
    """Pydantic validator for a filter field path."""
    problem = path_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


def check_redaction_path(path: str) -> str:
    """Pydantic validator for a redaction path."""
    problem = redaction_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


def _cel_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid CEL string literal here


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(_cel_string(i) for i in items) + "]"


def _path_rule() -> dict[str, str]:
    return {
        "rule": f"self in {_cel_list(FIELD_PATHS)} || self.matches({_cel_string(_OPEN_PATTERN)})",
        "message": "the field path" + UNKNOWN_TEXT,
        "messageExpression": (
            f"self + {_cel_string(UNKNOWN_TEXT)} + "
            f"(self.matches({_cel_string(_MEMBER_PATTERN)}) ? '' : "
            f"{_cel_string(APP_FIELD_TEXT)} + self)"
        ),
    }


def cel_path_rules() -> list[dict[str, str]]:
    """`x-kubernetes-validations` of a filter field path (a string node of the CRD)."""
    return [_path_rule()]


def cel_redaction_rules() -> list[dict[str, str]]:
    """`x-kubernetes-validations` of a redaction path (a string node of the CRD)."""
    return [
        _path_rule(),
        {
            "rule": f"!(self in {_cel_list(UNREDACTABLE_PATHS)})",
            "message": "the field" + UNREDACTABLE_TEXT,
            "messageExpression": f"self + {_cel_string(UNREDACTABLE_TEXT)}",
        },
    ]
