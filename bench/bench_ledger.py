"""Ledger speed: build (encode, chain, Merkle, sign) and verify from file://, each beside
its floor measured in the same run over the same data.

    .venv/bin/python bench/bench_ledger.py [--events 1000000] [--segment-events 1000]
                                           [--jobs N] [--skip-jobs]

One-core figures are CPU seconds of this process (time.process_time), so they hold on a
shared machine; wall-clock time is printed beside them. Prints events/s for:
  build   StreamWriter.extend (each segment's events in one call) + seal of fixed-size
          (~330-byte canonical) events, checkpoint signed per segment; pure CPU,
          nothing stored (storing is the sink's benchmark). Floor: encode each event
          as sorted-key JSON and SHA-256 its line (what any hash-chained log does per
          event).
  verify  `auditlock.ledger.verify` of the same ledger written to a file:// store, with
          every check FORMAT.md states: listing, reading, the line envelope and hash
          chain, the line rules (every event decoded, validated and re-encoded), Merkle
          roots, signatures, ids, and the per-object retention read-back (once more
          without it). Floor (issue 19): parse each stored line, re-encode it
          canonically and compare, SHA-256 it. Target: >= 0.5 x floor.
  rules   the line rules alone (auditlock.ledger.line_rules) over the same segments, to
          show what they cost inside verify
  jobs    `verify --jobs N` (N = the CPU count) over 2N streams, wall-clock, against N
          times the one-core rate of the same trail (its CPU rate with --jobs 1).
          Target: >= 0.8 x that.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

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

VERIFY_FLOOR_RATIO = 0.5  # issue 19 point 3
JOBS_RATIO = 0.8  # issue 19 point 3: N processes >= 0.8 x N x one core


def fixed_event(i: int) -> dict[str, Any]:
    """A ~330-byte event; only the id, time and a counter vary (fixed widths)."""
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


def build(n: int, segment_events: int, dest: Any, stream: str = "bench") -> tuple[float, float]:
    """(cpu, wall) seconds spent in extend/seal; the events of each segment are made
    just before they are appended (as in the sidecar, where they arrive fresh from intake)
    and that making is not counted."""
    signer = Signer(generate())
    clock = SimulatedClock(DEFAULT_START_NS)
    writer = StreamWriter.resume(dest, stream, signer, retention=None, clock=clock)
    cpu = wall = 0.0
    extend, seal = writer.extend, writer.seal
    for start in range(0, n, segment_events):
        batch = [fixed_event(i) for i in range(start, min(n, start + segment_events))]
        c0, w0 = time.process_time(), time.perf_counter()
        extend(batch)
        clock.now += 1_000_000_000
        objects = seal()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        writer.store(objects)
    writer.store(writer.close())
    return cpu, wall


def build_floor(n: int, segment_events: int) -> float:
    """CPU seconds to encode each event as sorted-key JSON and SHA-256 its line (prefix,
    event, a fixed suffix): the work per event no hash-chained log can skip."""
    dumps, sort, sha = orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.sha256
    cpu = 0.0
    for start in range(0, n, segment_events):
        batch = [fixed_event(i) for i in range(start, min(n, start + segment_events))]
        c0 = time.process_time()
        for event in batch:
            sha(b'\x00{"epoch":0,"event":' + dumps(event, option=sort) + b',"seq":0}').digest()
        cpu += time.process_time() - c0
    return cpu


def segments(dest: Any) -> Iterator[list[bytes]]:
    for name in dest.list("streams/"):
        if "/seg-" in name:
            yield decode_segment(dest.get(name), compressed=name.endswith(".gz"))


def verify_floor(dest: Any) -> float:
    """Issue 19's verify floor, CPU seconds: parse each stored line, re-encode it
    canonically and compare, SHA-256 it (reading the segments is not counted, so the
    floor is, if anything, too fast)."""
    loads, dumps, sort, sha = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.sha256
    cpu = 0.0
    for lines in segments(dest):
        c0 = time.process_time()
        for line in lines:
            if dumps(loads(line), option=sort) != line:
                raise AssertionError("a stored line is not canonical")
            sha(b"\x00" + line).digest()
        cpu += time.process_time() - c0
    return cpu


def line_rules_alone(dest: Any) -> float:
    """CPU seconds of LineRules.check over every segment (reading them not counted)."""
    rules = LineRules()
    prefix_len = len(line_prefix(0))
    found: list[object] = []
    cpu = 0.0
    for lines in segments(dest):
        c0 = time.process_time()
        rules.check("bench", lines, 0, prefix_len, found.append, found.append)  # type: ignore[arg-type]
        cpu += time.process_time() - c0
    rules.end_stream()
    assert not found, found[:3]
    return cpu


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def bench_jobs(root: str, n: int, segment_events: int, jobs: int) -> None:
    """`verify --jobs N` over 2N streams against N times its own one-core rate."""
    streams = 2 * jobs
    per = max(segment_events, n // streams)
    dest = sinks.open(f"file://{root}/jobs", fsync=False)
    for s in range(streams):
        build(per, segment_events, dest, stream=f"bench-{s}")
    total = per * streams
    options = VerifyOptions(check_retention=False)
    c0, w0 = time.process_time(), time.perf_counter()
    report = verify(dest, options)
    one_cpu, one_wall = time.process_time() - c0, time.perf_counter() - w0
    assert report.ok and report.events_verified == total, report.summary()
    one_core = total / one_cpu
    k0, w0 = children_cpu(), time.perf_counter()
    report = verify(dest, VerifyOptions(check_retention=False, jobs=jobs))
    wall, worker_cpu = time.perf_counter() - w0, children_cpu() - k0
    assert report.ok and report.events_verified == total, report.summary()
    print(
        f"jobs:   {total / wall:,.0f} events/s wall with --jobs {jobs} over {streams} streams "
        f"({wall:.2f} s wall, {worker_cpu:.2f} s worker CPU); --jobs 1: {one_core:,.0f} "
        f"events/s on one core ({one_cpu:.2f} s CPU, {one_wall:.2f} s wall); load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    figure(
        f"ledger verify --jobs {jobs} from file:// ({streams} streams, wall clock)",
        total / wall,
        "events/s",
        floor=jobs * one_core,
        target_ratio=JOBS_RATIO,
    )
    # What the workers cost per event against one process: where the wall-clock figure
    # falls short on a shared machine, this says whether the cause is our overhead.
    figure(
        f"ledger verify --jobs {jobs}, per worker CPU-second",
        total / worker_cpu,
        "events/s",
        floor=one_core,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--segment-events", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-jobs", action="store_true", help="no --jobs figure")
    args = parser.parse_args()
    n = args.events
    print(f"# bench_ledger: {n} events, {args.segment_events} per segment, pid {os.getpid()}")
    size = sum(len(canonical_bytes(fixed_event(i))) for i in range(1000)) / 1000
    print(f"event size (canonical): {size:.0f} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        dest = sinks.open(f"file://{tmp}/store", fsync=False)
        cpu, wall = build(n, args.segment_events, dest)
        floor = build_floor(n, args.segment_events)
        figure("ledger build (one core)", n / cpu, "events/s", floor=n / floor)
        print(
            f"build:  {n / cpu:,.0f} events/s on one core "
            f"({cpu:.2f} s CPU, {wall:.2f} s wall; encode+chain+Merkle+sign, storing excluded)"
            f"; floor (sorted-key JSON + SHA-256 per event) {n / floor:,.0f} events/s"
        )
        objects = len(list(dest.list()))
        floor = verify_floor(dest)
        print(
            f"floor:  {n / floor:,.0f} events/s on one core ({floor:.2f} s CPU; parse, "
            "re-encode canonically and compare, SHA-256 each stored line)"
        )
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
                floor=n / floor,
                target_ratio=VERIFY_FLOOR_RATIO if retention else None,
            )
            print(
                f"verify: {n / cpu:,.0f} events/s on one core ({cpu:.2f} s CPU, {wall:.2f} s "
                f"wall; {label} retention read-back of {objects} objects)"
            )
        cpu = line_rules_alone(dest)
        figure("ledger line rules alone (one core)", n / cpu, "events/s")
        print(
            f"rules:  {n / cpu:,.0f} events/s on one core ({cpu:.2f} s CPU; decode, validate "
            "and re-encode every event, the part of verify's time the line rules take)"
        )
        if not args.skip_jobs and args.jobs > 1:
            bench_jobs(tmp, n, args.segment_events, args.jobs)


if __name__ == "__main__":
    main()
