"""The `auditlock` command line run inside the test process (no child interpreter to
start): its exit code and what it printed."""

from __future__ import annotations

import contextlib
import io

from auditlock.cli.main import main


def cli(*args: str) -> tuple[int, str, str]:
    """`auditlock *args`: exit code, stdout, stderr (a usage error's SystemExit is its
    exit code)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
