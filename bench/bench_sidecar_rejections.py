"""Rejections must not amplify: the worst messages of invalid events within the default
limits (8 MiB `max_frame_bytes` / `max_body_bytes`), each sent to a fresh collector
process; prints its peak RSS (VmHWM) and how long the refusal took.

    .venv/bin/python bench/bench_sidecar_rejections.py [--size BYTES] [--only NAME-PART]

Cases (tests/servers/hostile_intake.py): Forward CompressedPackedForward, PackedForward
and Forward mode of millions of three-byte `[time, {}]` entries, one Message-mode record
of 8 MiB of empty maps; HTTP 8 MiB arrays of `{}` / `[]` (413), NDJSON of `{}` lines, and
an array just under the 32 MiB decode budget (400 with 100 errors and a count). The
target is the collector container's 128 MiB memory limit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

from tests.servers.hostile_intake import (
    FRAME,
    Case,
    forward_cases,
    forward_exchange,
    http_cases,
    peak_rss_mib,
    post,
)
from tests.servers.sidecar import make_config, sidecar_process

from bench.figures import figure

LIMIT_MIB = 128


def run(case: Case, forward: bool) -> tuple[float, float, float]:
    """(peak RSS MiB, RSS at ready MiB, seconds to the answer) on a fresh collector."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with sidecar_process(workdir, make_config(workdir, ports=True)) as proc:
            proc.start()
            ready = peak_rss_mib(proc.pid)
            started = time.monotonic()
            if forward:
                answer = forward_exchange(proc.forward_port, case.payload)
                assert answer == [{"ack": case.answer}], answer
            else:
                code, body = post(proc.http_port, case.payload)
                assert code == case.answer, body[:200]
                assert len(body) < 64 * 1024, len(body)
            seconds = time.monotonic() - started
            peak = peak_rss_mib(proc.pid)
            proc.terminate()
    return peak, ready, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=FRAME, help="bytes of dense entries")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    worst = 0.0
    cases = [(c, True) for c in forward_cases(args.size)]
    cases += [(c, False) for c in http_cases(args.size)]
    cases = [(c, forward) for c, forward in cases if args.only in c.name]
    for case, forward in cases:
        peak, ready, seconds = run(case, forward)
        worst = max(worst, peak)
        refused = "whole body" if case.refused is None else f"{case.refused:,} events"
        print(
            f"{'forward' if forward else 'http':8} {case.name:34} {len(case.payload):>9,} bytes"
            f"  refused {refused:>17}  peak RSS {peak:6.1f} MiB (ready {ready:.1f})"
            f"  {seconds:6.1f} s",
            flush=True,
        )
    figure(
        "peak RSS while rejecting the worst message within the limits",
        round(worst, 1),
        "MiB",
        target=LIMIT_MIB,
        better="lower",
    )


if __name__ == "__main__":
    main()
