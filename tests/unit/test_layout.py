"""The package layout described in docs/architecture.md."""

import importlib
import operator
import pkgutil
from pathlib import Path

import auditlock

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_is_not_shadowed() -> None:
    # A top-level `operator` package would break every import of the standard module.
    assert operator.__file__ is not None
    assert "site-packages" not in operator.__file__
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "src" / "operator").exists()
    assert operator.itemgetter(1)([0, 7]) == 7


def test_subpackages_named_in_architecture_exist() -> None:
    names = {m.name for m in pkgutil.iter_modules(auditlock.__path__)}
    assert {"policy", "ledger", "sinks", "sidecar", "operator", "cli"} <= names
    for name in names - {"__main__"}:
        importlib.import_module(f"auditlock.{name}")


def test_cli_help_exits_zero(capsys: object) -> None:
    from auditlock.cli.main import main

    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    else:
        raise AssertionError("--help should exit")
