"""docs/review.md lists the events table exactly as schema.py defines it, and names the
OCSF version the code writes."""

from __future__ import annotations

import re
from pathlib import Path

from auditlock.review.ocsf import OCSF_VERSION
from auditlock.review.schema import COLUMNS

DOC = Path(__file__).resolve().parents[2] / "docs" / "review.md"


def test_the_documented_table_is_the_table() -> None:
    text = DOC.read_text()
    section = text[text.index("## The events table") : text.index("## Queries")]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.+) \|$", section, re.M)
    assert rows == [(c.name, c.sql_type, c.meaning) for c in COLUMNS]


def test_the_documented_ocsf_version_is_the_one_written() -> None:
    assert f"OCSF schema {OCSF_VERSION}" in DOC.read_text().replace("**", "")
