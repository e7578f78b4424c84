"""Ledger build and verify, this tree against an earlier commit, in alternating runs.

    .venv/bin/python bench/compare_ledger.py BASE-COMMIT [--events 200000] [--rounds 3]

The machines here vary about 2x from hour to hour, so a before/after figure means
something only when both sides run one right after the other: each round runs the
commit's `src/` (exported with `git archive`) and then this tree's, each in its own
process on the same data shape, and prints events per CPU-second of both and their ratio.
Only public APIs (StreamWriter, verify) are used, so any commit since the ledger's
format was fixed runs unchanged. Each side builds the way its own product code would:
with `StreamWriter.extend` (a batch of events in one call) where the tree has it, else
with `append` one event at a time; the lines are the same either way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a child with PYTHONPATH set to one side's src/.
CHILD = r"""
import json, sys, tempfile, time
from auditlock import sinks
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.normalize import normalize_event
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.writer import StreamWriter

n, per = int(sys.argv[1]), 1000

def event(i):
    return normalize_event({
        "id": f"evt-{i:012d}", "time": format_ns(DEFAULT_START_NS + i * 1_000_000),
        "category": "access", "action": "get", "outcome": "success",
        "actor": {"kind": "user", "name": "alice", "ip": "10.1.2.3"},
        "target": {"resource": "secrets", "namespace": "pay", "name": "db"},
        "source": {"cluster": "eu1", "namespace": "pay", "pod": "api-7d9f8c6b5-x2x9z"},
        "details": {"n": i % 1000},
    })

with tempfile.TemporaryDirectory() as tmp:
    dest = sinks.open(f"file://{tmp}/s", fsync=False)
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = StreamWriter.resume(dest, "bench", Signer(generate()), retention=None, clock=clock)
    extend = getattr(writer, "extend", None)
    build = 0.0
    for start in range(0, n, per):
        batch = [event(i) for i in range(start, min(n, start + per))]
        c0 = time.process_time()
        if extend is not None:
            extend(batch)
        else:
            for e in batch:
                writer.append(e)
        clock.now += 1_000_000_000
        objects = writer.seal()
        build += time.process_time() - c0
        writer.store(objects)
    writer.store(writer.close())
    c0 = time.process_time()
    report = verify(dest, VerifyOptions())
    check = time.process_time() - c0
    assert report.ok and report.events_verified == n
    print(json.dumps({"build": n / build, "verify": n / check, "extend": extend is not None}))
"""


def export(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run(src: Path, events: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(events)],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", help="the commit to compare with")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base_src = export(args.base, Path(tmp))
        sides = {"base": base_src, "this": ROOT / "src"}
        results: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
        for round_ in range(args.rounds):
            for side, src in sides.items():
                results[side].append(run(src, args.events))
                r = results[side][-1]
                how = "extend" if r["extend"] else "append"
                print(f"round {round_ + 1} {side:4}: build {r['build']:,.0f}/s ({how}), "
                      f"verify {r['verify']:,.0f}/s", flush=True)  # fmt: skip
    for what in ("build", "verify"):
        base = statistics.median(r[what] for r in results["base"])
        this = statistics.median(r[what] for r in results["this"])
        print(f"{what}: base {args.base} {base:,.0f}/s, this tree {this:,.0f}/s, "
              f"ratio {this / base:.3f} (medians of {args.rounds} alternating rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
