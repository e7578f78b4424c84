"""The closed sets of the event format (docs/FORMAT.md, "Events").

Kept apart from the pydantic model in event.py so that code on the sidecar's hot path
(normalize, the policy filter) can use them without importing pydantic.
"""

from __future__ import annotations

CATEGORIES = ("access", "authorization", "data", "configuration", "alert")
OUTCOMES = ("success", "failure", "unknown")
ACTOR_KINDS = ("user", "serviceaccount", "system", "anonymous")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
