"""The closed sets of the event format (docs/FORMAT.md, "Events").

Kept apart from the pydantic model in event.py so that code on the sidecar's hot path
(normalize, the policy filter) and the sidecar's config can use them without importing
pydantic. Each set is one Literal type (for models and type checking) and the tuple of
its values (for checks at run time), derived from it. The members of the event and of
each of its objects are listed here too, in the model's field order: the fast checker
(normalize.py) takes them from here, and event.py refuses to load when its models name
other members, so a new member cannot be added to one and not the other.
"""

from __future__ import annotations

from typing import Literal, get_args

Category = Literal["access", "authorization", "data", "configuration", "alert"]
Outcome = Literal["success", "failure", "unknown"]
ActorKind = Literal["user", "serviceaccount", "system", "anonymous"]

CATEGORIES: tuple[Category, ...] = get_args(Category)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
ACTOR_KINDS: tuple[ActorKind, ...] = get_args(ActorKind)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

# Members of an event and of its objects, in the model's field order.
EVENT_MEMBERS = (
    "id",
    "time",
    "category",
    "action",
    "outcome",
    "actor",
    "target",
    "source",
    "correlation",
    "details",
)
ACTOR_MEMBERS = ("kind", "name", "ip")
TARGET_MEMBERS = ("resource", "namespace", "name")
SOURCE_MEMBERS = ("cluster", "namespace", "pod", "container", "node")
CORRELATION_MEMBERS = ("request_id", "trace_id")
