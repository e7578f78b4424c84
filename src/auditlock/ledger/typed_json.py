"""msgspec types for the accepted JSON value space (docs/FORMAT.md, "Events") and the
event parts both sides read alike, so that a decoder checks the number rules, nesting and
string lengths in C while it decodes: the verifier's line rules (line_rules.py) and the
collector's Forward decoder (sidecar/sources/forward, sidecar/pipeline/typed_records.py)."""

from __future__ import annotations

from typing import Annotated, Any, NewType

from msgspec import UNSET, Meta, Struct, UnsetType

from auditlock.ledger.canonical import MAX_SAFE_INTEGER
from auditlock.ledger.values import MAX_SHORT

# msgspec expands each level's two references (array and object), so a decoder grows as
# 2**levels: typed to TYPED_DEPTH levels (ample for real events); deeper values take a
# path that checks them in full against values.MAX_DEPTH.
TYPED_DEPTH = 7

# An event's short strings (action, names, target and source parts, correlation ids).
Short = Annotated[str, Meta(min_length=1, max_length=MAX_SHORT)]


# Fields in sorted order: the encoder writes them in that order, the canonical one.
class Target(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    name: Short | UnsetType = UNSET
    namespace: Short | UnsetType = UNSET
    resource: Short


class Correlation(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    request_id: Short | UnsetType = UNSET
    trace_id: Short | UnsetType = UNSET


# The lead bytes of the UTF-8 characters above U+FFFF (five single-byte searches are much
# faster than one character-class regex).
_ASTRAL_LEADS = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")


def has_astral(data: bytes) -> bool:
    """Whether UTF-8 `data` may hold a character above U+FFFF (which member names must
    not: values.check_name)."""
    return not data.isascii() and any(lead in data for lead in _ASTRAL_LEADS)


def json_values(levels: int) -> Any:
    """The type of a JSON value with at most `levels` more levels of nesting: strings,
    booleans, null, integers within +-(2**53 - 1), arrays and objects with string member
    names; no floats. Each level is wrapped in a NewType: nested generic aliases rehash
    their whole depth."""
    new_type: Any = NewType  # built at run time: not a static type for mypy
    scalar: Any = str | bool | Annotated[int, Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
    value: Any = new_type("_JsonScalar", scalar | None)
    for level in range(levels):
        value = new_type(f"_JsonLevel{level + 1}", scalar | list[value] | dict[str, value] | None)
    return value
