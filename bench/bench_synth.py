"""`auditlock synth --streams N` is linear in N: time per stream at several N.

    .venv/bin/python bench/bench_synth.py [--events 10] [--streams 250,500,1000,2000]

Writes each ledger to a fresh file:// store (fsync off, as `--no-fsync`) in this process
and prints wall and CPU seconds, and CPU milliseconds per stream; linear means the last
column stays flat as N doubles (it grew 37 s -> 111 s for 1,000 -> 2,000 streams when
every stream's resume walked the whole store).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from auditlock import sinks
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.synth import synthesize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.figures import figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10, help="per stream")
    parser.add_argument("--streams", default="250,500,1000,2000")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    signer = Signer(generate())
    per_stream: list[float] = []
    print(f"# bench_synth: {args.events} events per stream")
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            dest = sinks.open(f"file://{tmp}/store", fsync=False)
            c0, w0 = time.process_time(), time.perf_counter()
            synthesize(dest, signer, streams=n, events=args.events)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        per_stream.append(cpu / n * 1000)
        print(
            f"{n:6d} streams: {wall:6.2f} s wall, {cpu:6.2f} s CPU, "
            f"{per_stream[-1]:.2f} ms CPU/stream"
        )
    growth = per_stream[-1] / per_stream[0]
    figure(
        f"synth: CPU per stream at {counts[-1]} streams / at {counts[0]} (1 = linear)",
        growth,
        "x",
        target=1.5,
        better="lower",
    )


if __name__ == "__main__":
    main()
