"""Every test module stands alone: it imports helpers from tests/helpers/ or
tests/servers/, never tests or helpers from another test module (so running or changing
one test file never runs or breaks another's tests)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# `from tests.unit.test_x import ...`, `from .test_x import ...`, `import tests.e2e.test_x`,
# `from . import test_x` (at any indentation: imports inside functions count too).
TEST_MODULE_IMPORT = re.compile(
    r"^\s*(?:from\s+[\w.]*?\.?test_\w*\s+import|import\s+[\w.]*\btest_\w*"
    r"|from\s+\.+\s+import\s+.*\btest_)",
    re.M,
)


def test_no_test_module_imports_another_test_module() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}: {match.group(0).strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        for match in TEST_MODULE_IMPORT.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "move shared code to tests/helpers/: " + "; ".join(offenders)
