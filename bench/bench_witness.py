"""The operator's witness (issue 17 point 6): one cycle over 1,000 streams in one
destination, in wall time and in requests to the store; and the cost of `--witness-key`
in verify, as a ratio to verify without it on the same store in the same run.

    .venv/bin/python bench/bench_witness.py [--streams 1000] [--minutes 30]
        [--verify-streams 200] [--no-s3] [--parts cycle,verify]

1. **A cycle.** `--streams` streams (10 events each, `auditlock.ledger.synth`) in one
   destination: SeaweedFS (S3 with Object Lock, a real server on 127.0.0.1; skipped with
   --no-s3) and file://. One cycle is what `operator.witness.Witness` does for a
   destination: `operator.destination.read_newest` (one listing of `streams/`, one read
   per stream's newest checkpoint), `ledger.witness.chain_end` (one listing of the
   witness's records, one read of the newest), then one put of the signed record. The
   S3 requests are counted by botocore's own events (list pages included); the floor is
   the same reading without the record (what the trail watcher already spends every
   25 s), so the ratio is the witness's own cost on top of that reading.
2. **Verify.** `--verify-streams` streams each writing a checkpoint every minute for
   `--minutes` (file://, the store an auditor copies locally), and one witness record a
   minute naming each stream's newest checkpoint at that minute (what the operator
   would have stored). verify with and without `--witness-key`, same store, same
   process: the ratio is the cost of the witness step (it reads every witnessed
   checkpoint again; the checkpoints are a small part of a trail with events).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

from tests.servers.seaweedfs import SeaweedFS

from auditlock import sinks
from auditlock.ledger.checkpoint import decode_checkpoint
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.names import parse_name
from auditlock.ledger.synth import DEFAULT_START_NS, synthesize
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.witness import ChainEnd, Witnessed, chain_end, sorted_entries, witnessed
from auditlock.operator.destination import read_newest
from bench.figures import figure

WITNESS = "bench"
MINUTE_NS = 60 * 1_000_000_000


class Counting(sinks.Destination):
    """Counts the calls a cycle makes to a destination (file://: one call, one request)."""

    def __init__(self, inner: sinks.Destination) -> None:
        self.inner = inner
        self.url = inner.url
        self.calls: Counter[str] = Counter()

    def put(self, name: str, data: bytes, retention: Any) -> Any:
        self.calls["put"] += 1
        return self.inner.put(name, data, retention)

    def get(self, name: str, max_bytes: int | None = None) -> bytes:
        self.calls["get"] += 1
        return self.inner.get(name, max_bytes)

    def list(self, prefix: str = "") -> Any:
        self.calls["list"] += 1
        return self.inner.list(prefix)

    def retention(self, name: str) -> Any:
        return self.inner.retention(name)

    def check(self, required: Any) -> Any:
        return self.inner.check(required)


def cycle(destination: sinks.Destination, signer: Signer, *, store: bool) -> tuple[float, int]:
    """One witness cycle (store=False: the reading alone); (seconds, streams)."""
    started = time.perf_counter()
    tips = read_newest(destination.url, destination)
    if store:
        end = chain_end(destination, WITNESS)
        name, data = end.record(
            WITNESS, signer, witnessed(tips.values()), time_ns=time.time_ns(), interval_ms=60_000
        )
        destination.put(name, data, None)
    return time.perf_counter() - started, len(tips)


def s3_requests(destination: Any) -> Counter[str]:
    """Every request botocore sends for this destination's client, by operation."""
    counted: Counter[str] = Counter()

    def count(**kwargs: Any) -> None:
        counted[kwargs.get("event_name", "").rsplit(".", 1)[-1]] += 1

    destination.client.meta.events.register("before-send.s3", count)
    return counted


def bench_cycle(label: str, destination: sinks.Destination, counted: Counter[str],
                signer: Signer, streams: int) -> None:  # fmt: skip
    writer = Signer(generate())
    made = time.perf_counter()
    synthesize(destination, writer, streams=streams, events=10)
    print(f"{label}: {streams} streams written in {time.perf_counter() - made:.1f} s")
    cycle(destination, signer, store=True)  # the first record (and a warm connection)
    counted.clear()
    reading, n = cycle(destination, signer, store=False)
    read_requests = sum(counted.values())
    counted.clear()
    seconds, n = cycle(destination, signer, store=True)
    requests = sum(counted.values())
    print(f"{label}: one witness cycle over {n} streams: {seconds:.3f} s, {requests} "
          f"requests ({dict(counted)}); the reading alone {reading:.3f} s, {read_requests} "
          "requests")  # fmt: skip
    figure(f"witness cycle, {n} streams, {label}", round(seconds, 3), "s", better="lower",
           floor=round(reading, 3))  # fmt: skip
    figure(f"witness cycle requests, {n} streams, {label}", requests, "requests",
           better="lower", floor=read_requests)  # fmt: skip


def minute_records(dest: sinks.Destination, signer: Signer, minutes: int) -> int:
    """One record a minute naming each stream's newest checkpoint at that minute, as the
    operator would have stored them; returns the number of records."""
    by_stream: dict[str, list[tuple[int, Witnessed]]] = {}
    for name in dest.list("streams/"):
        parsed = parse_name(name)
        if parsed is None or parsed.kind != "checkpoint":
            continue
        signed = decode_checkpoint(dest.get(name))
        cp = signed.checkpoint
        entry = Witnessed(cp.stream, cp.epoch, cp.index, cp.tree_size, signed.digest)
        by_stream.setdefault(cp.stream, []).append((cp.time_ns, entry))
    end = ChainEnd(0, bytes(32))
    for minute in range(1, minutes + 1):
        at = DEFAULT_START_NS + minute * MINUTE_NS
        entries = []
        for seen in by_stream.values():
            before = [e for t, e in seen if t <= at]
            if before:
                entries.append(max(before, key=lambda e: (e.epoch, e.index)))
        name, data = end.record(WITNESS, signer, sorted_entries(entries), time_ns=at,
                                interval_ms=60_000)  # fmt: skip
        dest.put(name, data, None)
        end = end.after(data)
    return minutes


def bench_verify(work: Path, signer: Signer, streams: int, minutes: int) -> None:
    dest = sinks.open(f"file://{work / 'verify'}", fsync=False)
    writer = Signer(generate())
    synthesize(dest, writer, streams=streams, events=minutes * 6,
               interval_ns=10 * 1_000_000_000)  # fmt: skip
    records = minute_records(dest, signer, minutes)
    until = DEFAULT_START_NS + (minutes + 1) * MINUTE_NS
    plain = VerifyOptions(public_keys=[writer.public], until_ns=until, check_retention=False)
    witnessing = VerifyOptions(public_keys=[writer.public], until_ns=until,
                               check_retention=False, witness_keys=[signer.public])  # fmt: skip
    timings: dict[str, float] = {}
    reports = {}
    # Alternating runs, the fastest of each: the machine is shared, and a neighbour's
    # burst during one run would otherwise decide the ratio.
    runs = [("without", plain), ("with", witnessing)] * 2
    for label, options in runs:
        started = time.perf_counter()
        reports[label] = report = verify(dest, options)
        timings[label] = min(timings.get(label, 1e9), time.perf_counter() - started)
        assert report.ok, [f.describe() for f in report.findings[:3]]
    print(f"verify, {streams} streams x {minutes} min ({report.checkpoints_verified} "
          f"checkpoints, {report.events_verified} events, {records} witness records): "
          f"{timings['without']:.2f} s without --witness-key, {timings['with']:.2f} s with "
          f"({reports['with'].witness[0]})")  # fmt: skip
    figure(f"verify --witness-key, {streams} streams x {minutes} min", round(timings["with"], 3),
           "s", better="lower", floor=round(timings["without"], 3))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--verify-streams", type=int, default=200)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--parts", default="cycle,verify", help="cycle, verify or both")
    args = parser.parse_args()
    signer = Signer(generate())
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-witness-")))
        parts = set(args.parts.split(","))
        if "cycle" in parts:
            local = Counting(sinks.open(f"file://{work / 'cycle'}", fsync=False))
            bench_cycle("file://", local, local.calls, signer, args.streams)
        if "cycle" in parts and not args.no_s3:
            weed = stack.enter_context(SeaweedFS.started(work / "seaweedfs"))
            bucket = weed.make_bucket(object_lock=True)
            s3 = sinks.open(f"s3://{bucket}/trail", **weed.destination_options())
            bench_cycle("s3 (SeaweedFS)", s3, s3_requests(s3), signer, args.streams)
        if "verify" in parts:
            bench_verify(work, signer, args.verify_streams, args.minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
