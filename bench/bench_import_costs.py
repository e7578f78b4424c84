"""What each import the collector keeps out would cost it in resident memory.

docs/architecture.md ("Why some code is shaped for memory") lists the import placements
that keep these modules out of the collector; this measures what each would add. Every
row is a fresh interpreter: its RSS after importing what the collector imports anyway
(the floor), then after also importing the module, and the difference.

    .venv/bin/python bench/bench_import_costs.py
"""

from __future__ import annotations

import subprocess
import sys

# What the collector process imports in any case (its floor here), with charset
# detection blocked as the handoff blocks it.
BASE = (
    "import sys; sys.modules['charset_normalizer'] = None; sys.modules['chardet'] = None\n"
    "import auditlock.sidecar.app, requests"
)
CASES = {
    "pydantic and the event model (the handoff keeps them out)": (
        "import pydantic, auditlock.sidecar.config, auditlock.ledger.event; "
        "auditlock.sidecar.config._adapter()"
    ),
    "google-cloud-storage, google-api-core, protobuf (sinks/gcs_json.py keeps them out)": (
        "import google.cloud.storage, google.api_core.exceptions"
    ),
    "charset-normalizer (the handoff blocks it)": (
        "del sys.modules['charset_normalizer']; import charset_normalizer"
    ),
    "aiohttp (sidecar/http_server.py keeps it out)": "import aiohttp, aiohttp.web",
}
PROBE = (
    "import re\n"
    "def rss():\n"
    "    text = open('/proc/self/status').read()\n"
    "    return int(re.search(r'VmRSS:\\s+(\\d+)', text).group(1)) / 1024\n"
    "{base}\n"
    "floor = rss()\n"
    "{extra}\n"
    "print(floor, rss())\n"
)


def measure(extra: str) -> tuple[float, float]:
    code = PROBE.format(base=BASE, extra=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    floor, after = (float(x) for x in out.stdout.split())
    return floor, after


def main() -> None:
    print(f"{'import':<86} {'floor MiB':>9} {'with MiB':>9} {'cost MiB':>9}")
    for name, extra in CASES.items():
        floor, after = measure(extra)
        print(f"{name:<86} {floor:9.1f} {after:9.1f} {after - floor:9.1f}")


if __name__ == "__main__":
    main()
