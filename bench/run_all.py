"""Run every benchmark under bench/ and print one table of the figures the issues ask for.

    .venv/bin/python bench/run_all.py            # or: make bench
    .venv/bin/python bench/run_all.py --quick    # smaller runs, for a smoke check

Each benchmark runs in its own process (one core each, as the targets say), one after
the other so they do not compete for the machine's two cores. Their own output is kept
in out/bench/<name>.log; the table is printed at the end and written to
out/bench/summary.md. Each figure stands beside its floor when it has one (the same
work's physical lower bound, measured by the benchmark in the same run on the same
data), the ratio of the two, and its target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import PREFIX  # noqa: E402

# name -> (arguments for a full run, arguments for --quick)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_ledger.py": ([], ["--events", "100000"]),
    "bench_synth.py": ([], ["--streams", "100,400"]),
    "bench_verify_rss.py": ([], ["--events", "100000"]),
    # A 50 ms round trip in front of each server, as a remote bucket has: shows whether
    # uploads overlap (on loopback the two cores, not the network, are the limit).
    "bench_sinks.py": (["--latency-ms", "50"], ["--latency-ms", "50", "--seconds", "1"]),
    "bench_sidecar.py": ([], ["--events", "100000", "--seconds", "8"]),
    "bench_sidecar_proxy.py": ([], ["--requests", "500"]),
    "bench_sidecar_rejections.py": ([], ["--size", "2097152"]),
    "bench_sidecar_many_messages.py": ([], ["--runs", "2"]),
    "bench_operator.py": ([], ["--requests", "500", "--policies", "10"]),
    "bench_cert_issuance.py": ([], ["--pods", "20", "--rounds", "2"]),
    "bench_alerts.py": (
        [],
        ["--seconds", "3", "--events", "20000", "--heartbeat", "2", "--watch", "2"],
    ),
    # 10,000,000 events, generated once into ~/.cache/auditlock/bench-review
    "bench_review.py": ([], ["--streams", "10", "--events", "10000"]),
    # 10,000,000 events: the synthetic trail alone takes minutes to write
    "bench_report.py": ([], ["--events", "200000"]),
    # 1,000 streams written to SeaweedFS first (minutes on a loaded machine)
    "bench_witness.py": ([], ["--streams", "100", "--minutes", "5", "--verify-streams", "20"]),
}


def run(script: str, args: list[str], logs: Path) -> tuple[list[dict[str, object]], int, float]:
    started = time.monotonic()
    log_path = logs / f"{Path(script).stem}.log"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    log_path.write_text(proc.stdout + proc.stderr)
    figures = [
        json.loads(line[len(PREFIX) :])
        for line in proc.stdout.splitlines()
        if line.startswith(PREFIX)
    ]
    return figures, proc.returncode, time.monotonic() - started


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("only", nargs="*", help="benchmark file names to run (default all)")
    args = parser.parse_args()
    logs = ROOT / "out" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    failed = 0
    for script, (full, quick) in BENCHMARKS.items():
        if args.only and script not in args.only:
            continue
        print(f"running {script} ...", flush=True)
        figures, code, seconds = run(script, quick if args.quick else full, logs)
        if code != 0 or not figures:
            failed += 1
            rows.append(f"| {script} | benchmark failed (exit {code}), see out/bench | | | | | |")
            continue
        for f in figures:
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]  # type: ignore[index]
            target = (
                ""
                if f["target"] is None
                else (("≥ " if f["better"] == "higher" else "≤ ") + fmt(f["target"]))
            )
            if f.get("target_ratio") is not None:
                target = f"≥ {fmt(f['target_ratio'])} x floor"
            floor = "" if f.get("floor") is None else f"{fmt(f['floor'])} {f['unit']}"
            ratio = "" if f.get("ratio") is None else fmt(f["ratio"])
            rows.append(
                f"| {script} | {f['name']} | {fmt(f['value'])} {f['unit']} | {floor} | "
                f"{ratio} | {target} | {met} |"
            )
        print(f"  done in {seconds:.0f} s", flush=True)
    header = [
        f"machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f} at the end), "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (" (--quick)" if args.quick else ""),
        "",
        "| benchmark | figure | measured | floor | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    table = "\n".join(header + rows)
    print()
    print(table)
    (logs / "summary.md").write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
