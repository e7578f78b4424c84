"""Ledger speed on one core: build (encode, chain, Merkle, sign) and verify from file://.

    .venv/bin/python bench/bench_ledger.py [--events 1000000] [--segment-events 1000]

Figures are CPU seconds of this process (time.process_time), i.e. one core, so they hold
on a shared machine; wall-clock time is printed beside them. Prints events/s for:
  build   StreamWriter.append + seal of fixed-size (~300-byte canonical) events, checkpoint
          signed per segment; pure CPU, nothing stored (storing is the sink's benchmark)
  verify  `auditlock.ledger.verify` of the same ledger written to a file:// store:
          listing, reading, hashing every line, chain, Merkle roots, signatures, and the
          per-object retention read-back; once more without the retention read-back.
          Both include the line rules (every event decoded, validated and re-encoded)
  rules   the line rules alone (auditlock.ledger.line_rules) over the same segments, to
          show what they cost inside verify
Targets (issue 3): build >= 200,000 events/s, verify >= 300,000 events/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from auditlock import sinks
from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.line_rules import LineRules
from auditlock.ledger.lines import line_prefix
from auditlock.ledger.normalize import normalize_event
from auditlock.ledger.segment import decode_segment
from auditlock.ledger.synth import DEFAULT_START_NS, SimulatedClock
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.writer import StreamWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.figures import figure

BUILD_TARGET = 200_000  # events/s on one core (issue 3)
VERIFY_TARGET = 300_000


def fixed_event(i: int) -> dict[str, Any]:
    """A ~300-byte event; only the id, time and a counter vary (fixed widths)."""
    return normalize_event(
        {
            "id": f"evt-{i:012d}",
            "time": format_ns(DEFAULT_START_NS + i * 1_000_000),
            "category": "access",
            "action": "get",
            "outcome": "success",
            "actor": {"kind": "user", "name": "alice", "ip": "10.1.2.3"},
            "target": {"resource": "secrets", "namespace": "pay", "name": "db"},
            "source": {"cluster": "eu1", "namespace": "pay", "pod": "api-7d9f8c6b5-x2x9z"},
            "details": {"n": i % 1000},
        }
    )


def build(n: int, segment_events: int, dest: Any) -> tuple[float, float]:
    """(cpu, wall) seconds spent in append/seal/close; the events of each segment are made
    just before they are appended (as in the sidecar, where they arrive fresh from intake)
    and that making is not counted."""
    signer = Signer(generate())
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = StreamWriter.resume(dest, "bench", signer, retention=None, clock=clock)
    cpu = wall = 0.0
    append, seal = writer.append, writer.seal
    for start in range(0, n, segment_events):
        batch = [fixed_event(i) for i in range(start, min(n, start + segment_events))]
        c0, w0 = time.process_time(), time.perf_counter()
        for event in batch:
            append(event)
        clock.now += 1_000_000_000
        objects = seal()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        writer.store(objects)
    writer.store(writer.close())
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--segment-events", type=int, default=1000)
    args = parser.parse_args()
    n = args.events
    print(f"# bench_ledger: {n} events, {args.segment_events} per segment, pid {os.getpid()}")
    size = sum(len(canonical_bytes(fixed_event(i))) for i in range(1000)) / 1000
    print(f"event size (canonical): {size:.0f} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        dest = sinks.open(f"file://{tmp}/store", fsync=False)
        cpu, wall = build(n, args.segment_events, dest)
        figure("ledger build (one core)", n / cpu, "events/s", target=BUILD_TARGET)
        print(
            f"build:  {n / cpu:,.0f} events/s on one core "
            f"({cpu:.2f} s CPU, {wall:.2f} s wall; encode+chain+Merkle+sign, storing excluded)"
        )
        objects = len(list(dest.list()))
        for retention in (True, False):
            c0, w0 = time.process_time(), time.perf_counter()
            report = verify(dest, VerifyOptions(check_retention=retention))
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            assert report.ok and report.events_verified == n, report.summary()
            label = "with" if retention else "without"
            figure(
                f"ledger verify from file:// ({label} retention read-back, one core)",
                n / cpu,
                "events/s",
                target=VERIFY_TARGET if retention else None,
            )
            print(
                f"verify: {n / cpu:,.0f} events/s on one core ({cpu:.2f} s CPU, {wall:.2f} s "
                f"wall; {label} retention read-back of {objects} objects)"
            )
        cpu = line_rules_alone(dest, n)
        figure("ledger line rules alone (one core)", n / cpu, "events/s")
        print(
            f"rules:  {n / cpu:,.0f} events/s on one core ({cpu:.2f} s CPU; decode, validate "
            "and re-encode every event, the part of verify's time the line rules take)"
        )


def line_rules_alone(dest: Any, n: int) -> float:
    """CPU seconds of LineRules.check over every segment (reading them not counted)."""
    rules = LineRules()
    prefix_len = len(line_prefix(0))
    cpu = 0.0
    for name in dest.list("streams/"):
        if "/seg-" not in name:
            continue
        lines = decode_segment(dest.get(name), compressed=name.endswith(".gz"))
        found: list[object] = []
        c0 = time.process_time()
        rules.check("bench", lines, 0, prefix_len, found.append, found.append)  # type: ignore[arg-type]
        cpu += time.process_time() - c0
        assert not found, found[:3]
    return cpu


if __name__ == "__main__":
    main()
