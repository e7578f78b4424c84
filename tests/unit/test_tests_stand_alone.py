"""Every test module stands alone: it imports helpers from tests/helpers/ or
tests/servers/, never tests or helpers from another test module (so running or changing
one test file never runs or breaks another's tests)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append("." * node.level + (node.module or ""))
            if node.module is None:  # from . import test_x
                found += [alias.name for alias in node.names]
    return found


def test_no_test_module_imports_another_test_module() -> None:
    offenders = [
        f"{path.relative_to(TESTS)} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in _imported_modules(path)
        if module.rpartition(".")[2].startswith("test_")
    ]
    assert not offenders, "move shared code to tests/helpers/: " + "; ".join(offenders)
