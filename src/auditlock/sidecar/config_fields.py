"""Field types shared by the sections of the collector config (config.py and each source's
config.py).

The sections are plain frozen dataclasses, validated by pydantic at the boundary
(`config.config_from_dict`). The long-running collector process reads an already
validated file into the same classes without importing pydantic (handoff.py), which
keeps pydantic out of the pod's memory limit (docs/benchmarks.md, "Import costs").
Unknown keys are a typo in
a rendered file: every section refuses them (`FORBID_EXTRA`).
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Gt, Le

FORBID_EXTRA = {"extra": "forbid"}
Port = Annotated[int, Ge(0), Le(65535)]  # 0 picks a free port (tests)
Positive = Annotated[float, Gt(0)]
