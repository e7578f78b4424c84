"""One way for every benchmark to hand its figures to bench/run_all.py.

A benchmark prints whatever explains its run, and calls `figure(...)` for each number
the issues ask for. That prints one `FIGURE {json}` line, which run_all.py collects into
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
) -> None:
    met = None
    if target is not None:
        met = value >= target if better == "higher" else value <= target
    record = {"name": name, "value": value, "unit": unit, "target": target,
              "better": better, "met": met}  # fmt: skip
    print(PREFIX + json.dumps(record), flush=True)
