"""The closed sets of the event format (docs/FORMAT.md, "Events").

Kept apart from the pydantic model in event.py so that code on the sidecar's hot path
(normalize, the policy filter) and the sidecar's config can use them without importing
pydantic. Each set is one Literal type (for models and type checking) and the tuple of
its values (for checks at run time), derived from it.
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
