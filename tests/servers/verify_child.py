"""`auditlock verify` as a real child process, with its own peak RSS and a hang timeout.

The child reports its high-water RSS (VmHWM of its own memory map) as it exits: ru_maxrss
from wait4 would also count the parent's pages at fork time (a test process that just
built a 1 GiB gzip bomb would look like a verify that inflated it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

_CHILD = """
import atexit, sys
def _hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("\\nVmHWM " + line.split()[1] + "\\n")
atexit.register(_hwm)
from auditlock.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


class VerifyHung(Exception):
    pass


@dataclass
class VerifyRun:
    code: int
    out: str
    err: str
    peak_rss_mib: float
    seconds: float

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.out)
        return doc


def run_verify_child(args: list[str], timeout: float) -> VerifyRun:
    """`auditlock <args>` in a child; VerifyHung if it runs past `timeout` (then killed)."""
    started = time.monotonic()
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, *args],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise VerifyHung(f"auditlock {' '.join(args[:2])} ran past {timeout} s") from None
    err = child.stderr.decode(errors="replace")
    body, _, hwm = err.rpartition("\nVmHWM ")
    return VerifyRun(
        child.returncode,
        child.stdout.decode(errors="replace"),
        body,
        int(hwm.strip()) / 1024,
        time.monotonic() - started,
    )
