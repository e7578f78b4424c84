"""One way for every benchmark to hand its figures to bench/run_all.py.

A benchmark prints whatever explains its run, and calls `figure(...)` for each number
the issues ask for, with the floor it is measured against when there is one. That
prints one `FIGURE {json}` line, which run_all.py collects into
the summary table (and which stays readable when a benchmark is run on its own).
"""

from __future__ import annotations

import json
from typing import Literal

PREFIX = "FIGURE "


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    target: float | None = None,
    better: Literal["higher", "lower"] = "higher",
    floor: float | None = None,
    target_ratio: float | None = None,
) -> None:
    """`floor`: what the same work's physical floor measured in the same run (same unit);
    `ratio` = value / floor is printed beside it, and `target_ratio` (value >= ratio x
    floor) is then the target, since the machines' speed varies from hour to hour."""
    ratio = None if not floor else round(value / floor, 3)
    met = None
    if target_ratio is not None and ratio is not None:
        met = ratio >= target_ratio
    elif target is not None:
        met = value >= target if better == "higher" else value <= target
    record = {"name": name, "value": value, "unit": unit, "target": target,
              "better": better, "met": met, "floor": floor, "ratio": ratio,
              "target_ratio": target_ratio}  # fmt: skip
    print(PREFIX + json.dumps(record), flush=True)
