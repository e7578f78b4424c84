"""The collector sidecar, end to end: a Forward client → sidecar process → signed segments.

    .venv/bin/python bench/bench_sidecar.py [throughput|latency|memory|ready|all]
        [--events 300000] [--runs 3] [--seconds 20]

throughput  A Forward client (this process, PackedForward, 1,000-event chunks, 4
            connections, acks) sends --events events to a sidecar process pinned to
            one CPU (the client runs on the other) with a file:// store, --runs times.
            Prints events/s from the first send until the ledger's last seq is stored,
            and events per CPU-second of the sidecar process (the "one core" figure;
            the machine is shared, so wall time depends on neighbours). Before each
            run, on the same CPU and the same frames, the floor: msgpack-decode the
            Forward entries, encode each record as sorted-key JSON, SHA-256 it
            (events per CPU-second of this process). The figure is the median run
            beside the median floor and their ratio.
latency     10,000 events/s (100-event chunks every 10 ms, pipelined acks) for --seconds
            with default batching to a file:// store; a watcher polls the store every
            10 ms and records when each event's segment appears. Prints p50/p99/max of
            sent → durable in the store (includes up to 10 ms polling granularity),
            and p50/p99 of sent → acknowledged (the spool's part) per chunk.
memory      RSS of the sidecar process with a gs:// destination (fake-gcs-server): idle
            (5 s after ready) and the maximum while receiving 10,000 events/s for
            --seconds. Also with file:// for comparison.
ready       Seconds from spawning the process to /readyz 200, five times, file:// and
            gs://.
profile     Runs the sidecar under cProfile while 100,000 events go through, and prints
            the functions with the most own time (not part of `all`).
stages      The collector's per-event work stage by stage in this process (one core,
            CPU time), beside the floor over the same frames: Forward reading, the
            pipeline, spool packing and reading back, the ledger writer (append + seal,
            without storing). Shows where the time goes without a profiler's overhead
            (not part of `all`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

import msgpack
import psutil
from tests.servers.fakegcs import FakeGCS
from tests.servers.sidecar import SidecarProcess, make_config

from auditlock.sidecar.sources.forward import protocol
from bench.figures import figure

CHUNK = 1000


def event_frames(first: int, count: int, per_chunk: int, tag: str = "bench.access") -> list[bytes]:
    """PackedForward frames with chunk ids; event n carries details.n = n."""
    frames = []
    now = time.time_ns()
    for start in range(first, first + count, per_chunk):
        entries = b"".join(
            msgpack.packb(
                [
                    protocol.pack_event_time(now + n),
                    {
                        "action": "orders.read",
                        "actor": {"kind": "user", "name": "alice@example.com", "ip": "10.0.0.7"},
                        "target": {"resource": "orders", "namespace": "shop", "name": f"o-{n}"},
                        "outcome": "success",
                        "request_id": f"req-{n:08x}",
                        "n": n,
                        "details": {
                            "method": "GET",
                            "path": f"/api/v1/orders/o-{n}",
                            "status": 200,
                            "user_agent": "orders-web/2.14.1",
                        },
                    },
                ]
            )
            for n in range(start, min(start + per_chunk, first + count))
        )
        frames.append(bytes(msgpack.packb([tag, entries, {"chunk": f"c{start}"}])))
    return frames


class AckClient:
    """One connection: send frames, read acks (pipelined up to `window` chunks)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.unpacker = msgpack.Unpacker(raw=False)

    def read_ack(self) -> Any:
        while True:
            for message in self.unpacker:
                return message
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("sidecar closed the connection")
            self.unpacker.feed(data)

    def close(self) -> None:
        self.sock.close()


def metric(proc: SidecarProcess, name: str) -> float:
    for line in proc.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def wait_stored(proc: SidecarProcess, last_seq: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(proc, "auditlock_sidecar_ledger_last_seq") >= last_seq:
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"ledger did not reach seq {last_seq}")


def pin(pid: int, cpu: int) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {cpu % (os.cpu_count() or 1)})


def floor_rate(frames: list[list[bytes]]) -> dict[str, Any]:
    """The collector's floor over the same frames, on this process's CPU: decode each
    Forward message and its entries, sorted-key JSON of each record, SHA-256 of that."""
    import hashlib

    import orjson

    sort_keys = orjson.OPT_SORT_KEYS
    dumps = orjson.dumps
    sha256 = hashlib.sha256
    count = 0
    started = time.process_time()
    for batch in frames:
        for frame in batch:
            _tag, entries, _option = msgpack.unpackb(frame, raw=False)
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(entries)
            for _time, record in unpacker:
                sha256(dumps(record, option=sort_keys)).digest()
                count += 1
    cpu = time.process_time() - started
    return {"events": count, "cpu_s": round(cpu, 3), "events_per_cpu_s": round(count / cpu)}


def bench_throughput(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc = SidecarProcess(workdir, make_config(workdir, ports=True, delivery={}))
        try:
            proc.start()
            pin(proc.pid, 1)
            pin(os.getpid(), 0)
            connections = 4
            per = events // connections
            frames = [event_frames(i * per, per, CHUNK) for i in range(connections)]
            pin(os.getpid(), 1)  # the floor on the sidecar's CPU, just before its run
            floor = floor_rate(frames)
            pin(os.getpid(), 0)
            cpu0 = psutil.Process(proc.pid).cpu_times()
            started = time.monotonic()

            def run(batch: list[bytes]) -> None:
                client = AckClient(proc.forward_port)
                window = 2  # two chunks in flight per connection
                pending = 0
                for frame in batch:
                    client.sock.sendall(frame)
                    pending += 1
                    if pending >= window:
                        client.read_ack()
                        pending -= 1
                for _ in range(pending):
                    client.read_ack()
                client.close()

            threads = [threading.Thread(target=run, args=(f,)) for f in frames]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            acked = time.monotonic()
            stored = wait_stored(proc, per * connections - 1)
            cpu1 = psutil.Process(proc.pid).cpu_times()
            cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            total = per * connections
            result = {
                "events": total,
                "acked_per_s": round(total / (acked - started)),
                "stored_per_s": round(total / (stored - started)),
                "sidecar_cpu_s": round(cpu, 2),
                "events_per_cpu_s": round(total / cpu),
                "wall_s": round(stored - started, 2),
                "floor_events_per_cpu_s": floor["events_per_cpu_s"],
                "ratio": round(total / cpu / floor["events_per_cpu_s"], 3),
            }
            assert proc.terminate() == 0
            return result
        finally:
            proc.kill()


class StoreWatcher(threading.Thread):
    """Polls a file:// store and records when each event (details.n) first appears."""

    def __init__(self, root: Path, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.seen: dict[int, float] = {}
        self.done: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            streams = self.root / "streams"
            if streams.exists():
                for path in streams.rglob("seg-*.jsonl"):
                    if path.name in self.done:
                        continue
                    self.done.add(path.name)
                    for line in path.read_bytes().splitlines():
                        n = json.loads(line)["event"]["details"]["n"]
                        self.seen.setdefault(n, now)
            time.sleep(self.interval)


def send_at_rate(
    proc: SidecarProcess,
    rate: int,
    seconds: float,
    per_chunk: int = 100,
    acked: list[float] | None = None,
) -> dict[int, float]:
    """Send `rate` events/s for `seconds`; returns the send time of every event, and
    appends each chunk's acknowledgement time to `acked` (acks come in chunk order)."""
    total = int(rate * seconds)
    frames = event_frames(0, total, per_chunk)
    interval = per_chunk / rate
    client = AckClient(proc.forward_port)
    sent: dict[int, float] = {}
    ack_times = acked if acked is not None else []

    def read_acks() -> None:
        for _ in frames:
            client.read_ack()
            ack_times.append(time.monotonic())

    acks = threading.Thread(target=read_acks, daemon=True)
    acks.start()
    start = time.monotonic()
    for index, frame in enumerate(frames):
        due = start + index * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic()
        client.sock.sendall(frame)
        for n in range(index * per_chunk, index * per_chunk + per_chunk):
            sent[n] = now
    acks.join(60)
    client.close()
    return sent


def bench_latency(seconds: float, delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = make_config(workdir, ports=True)
        config["delivery"] = dict(delivery or {})  # default batching unless --batch/--delay
        proc = SidecarProcess(workdir, config)
        try:
            proc.start()
            watcher = StoreWatcher(workdir / "store")
            watcher.start()
            acked: list[float] = []
            per_chunk = 100
            sent = send_at_rate(proc, 10_000, seconds, per_chunk, acked)
            deadline = time.monotonic() + 30
            while len(watcher.seen) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.05)
            watcher.stop.set()
            lat = sorted(watcher.seen[n] - t for n, t in sent.items() if n in watcher.seen)
            # sent -> acknowledged (the spool's write and fsync), per chunk
            to_ack = sorted(a - sent[i * per_chunk] for i, a in enumerate(acked))
            assert proc.terminate() == 0
            return {
                "events": len(sent),
                "stored": len(lat),
                "p50_ms": round(1000 * lat[len(lat) // 2], 1),
                "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1),
                "max_ms": round(1000 * lat[-1], 1),
                "acked_p50_ms": round(1000 * to_ack[len(to_ack) // 2], 1),
                "acked_p99_ms": round(1000 * to_ack[int(len(to_ack) * 0.99)], 1),
            }
        finally:
            proc.kill()


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / (1024 * 1024)


def config_for(scheme: str, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    """A sidecar config on free ports writing to file://, or to gs:// on a fake-gcs-server
    that lives as long as `stack`."""
    if scheme != "gs":
        return make_config(workdir, ports=True)
    gcs = stack.enter_context(FakeGCS.started(workdir / "gcs"))
    bucket = gcs.make_bucket()
    return make_config(
        workdir,
        f"gs://{bucket}/trail",
        ports=True,
        destination={"options": gcs.destination_options()},
    )


def bench_memory(
    seconds: float, scheme: str, delivery: dict[str, Any] | None = None, idle_seconds: float = 5
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        config = config_for(scheme, workdir, stack)
        config["delivery"] = dict(delivery or {})
        proc = SidecarProcess(workdir, config)
        try:
            proc.start()
            time.sleep(idle_seconds)  # > 60 s includes an idle heartbeat checkpoint
            idle = rss_mib(proc.pid)
            peak = idle
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, rss_mib(proc.pid))
                    time.sleep(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            sent = send_at_rate(proc, 10_000, seconds)
            wait_stored(proc, len(sent) - 1, timeout=120)
            stop.set()
            sampler.join()
            assert proc.terminate() == 0
            return {
                "scheme": scheme,
                "idle_rss_mib": round(idle, 1),
                "peak_rss_mib": round(peak, 1),
            }
        finally:
            proc.kill()


def bench_ready(scheme: str, runs: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        config = config_for(scheme, workdir, stack)
        proc = SidecarProcess(workdir, config)
        times = []
        try:
            for _ in range(runs):
                times.append(proc.start())
                assert proc.terminate() == 0
        finally:
            proc.kill()
        return {
            "scheme": scheme,
            "median_s": round(statistics.median(times), 2),
            "min_s": round(min(times), 2),
            "max_s": round(max(times), 2),
        }


def bench_profile(events: int = 100_000) -> None:
    import pstats
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc = SidecarProcess(workdir, make_config(workdir, ports=True, delivery={}))
        out = workdir / "sidecar.prof"
        with open(proc.log_path, "ab") as log:
            # The sidecar's main() ends with os._exit (see app.py), which would skip
            # cProfile's dump; so profile Sidecar.run() itself and dump before exiting.
            script = (
                "import asyncio, cProfile, sys\n"
                "from auditlock.sidecar.app import Sidecar\n"
                "from auditlock.sidecar.config import load_config\n"
                "profiler = cProfile.Profile()\n"
                "profiler.enable()\n"
                "asyncio.run(Sidecar(load_config(sys.argv[1])).run())\n"
                "profiler.disable()\n"
                "profiler.dump_stats(sys.argv[2])\n"
            )
            proc.proc = subprocess.Popen(
                [sys.executable, "-c", script, str(proc.config_path), str(out)],
                stdout=log,
                stderr=log,
            )
        try:
            while not proc.ready():
                time.sleep(0.05)
            client = AckClient(proc.forward_port)
            for frame in event_frames(0, events, CHUNK):
                client.sock.sendall(frame)
                client.read_ack()
            client.close()
            wait_stored(proc, events - 1)
            assert proc.terminate() == 0
        finally:
            proc.kill()
        pstats.Stats(str(out)).sort_stats("tottime").print_stats(25)


def bench_stages(events: int) -> None:
    from datetime import timedelta

    from auditlock import sinks
    from auditlock.ledger.keys import generate
    from auditlock.ledger.writer import StreamWriter
    from auditlock.sidecar.config import PipelineConfig, SourceIdentity
    from auditlock.sidecar.pipeline import Pipeline
    from auditlock.sidecar.pipeline.recent_ids import RecentIds
    from auditlock.sidecar.pipeline.typed_records import TypedRecords
    from auditlock.sidecar.sources.forward.reader import Entries, MessageReader
    from auditlock.sidecar.spool.records import decode_payload, pack_encoded
    from auditlock.sinks.base import LockMode, RetentionSpec

    frames = event_frames(0, events, CHUNK)
    timings: list[tuple[str, float]] = []

    def timed(name: str, work: Any) -> Any:
        started = time.process_time()
        result = work()
        timings.append((name, time.process_time() - started))
        return result

    floor = floor_rate([frames])
    timings.append(("floor (decode + sorted-key JSON + SHA-256)", floor["cpu_s"]))

    def read() -> list[Any]:
        reader = MessageReader(8 * 1024 * 1024)
        out = []
        for frame in frames:
            reader.feed(frame)
            out.extend(item for item in reader.read() if isinstance(item, (Entries, TypedRecords)))
        return out

    batches = timed("Forward reader (decode entries)", read)
    identity = SourceIdentity(cluster="c", namespace="shop", pod="api-1", container="app")
    pipeline = Pipeline(PipelineConfig(), identity, RecentIds())
    prepared = timed(
        "pipeline (normalize, check, canonical bytes)",
        lambda: [pipeline.process_all("forward", batch).events for batch in batches],
    )
    batches.clear()
    payloads = timed("spool: pack records", lambda: [pack_encoded([], 0, e) for e in prepared])
    records = timed(
        "spool: read records back", lambda: [decode_payload(1, p, len(p)) for p in payloads]
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = sinks.open(f"file://{tmp}/store")
        writer = StreamWriter.resume(
            store,
            "bench-1",
            generate(),
            retention=RetentionSpec(period=timedelta(days=1), mode=LockMode("Unlocked")),
        )

        def write() -> None:
            for record in records:
                for event in record.events:
                    writer.append_canonical(event)
                    if writer.pending_events >= 5000:
                        writer.seal()
            writer.seal()

        timed("ledger writer (append + seal, not stored)", write)
    floor_us = floor["cpu_s"] * 1e6 / events
    print(f"{'stage':50s} {'us/event':>9s} {'x floor':>8s}")
    for name, cpu in timings:
        us = cpu * 1e6 / events
        print(f"{name:50s} {us:9.2f} {us / floor_us:8.2f}")
    total = sum(cpu for name, cpu in timings[1:]) * 1e6 / events
    print(f"{'sum of the stages (no I/O, no event loop)':50s} {total:9.2f} {total / floor_us:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", default="all")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--runs", type=int, default=3, help="throughput: runs (median)")
    parser.add_argument(
        "--idle-seconds", type=float, default=5, help="memory: wait this long before 'idle'"
    )
    parser.add_argument("--batch", type=int, help="delivery.batch_max_events")
    parser.add_argument("--delay", type=float, help="delivery.max_delay_seconds")
    args = parser.parse_args()
    delivery: dict[str, Any] = {"batch_max_events": args.batch} if args.batch else {}
    if args.delay:
        delivery["max_delay_seconds"] = args.delay
    print(f"load average before: {os.getloadavg()}")
    if args.what in ("throughput", "all"):
        runs = []
        for _ in range(args.runs):
            runs.append(bench_throughput(args.events))
            print("throughput:", runs[-1], flush=True)
        figure(
            f"Forward with acks -> signed segments in file://, per sidecar CPU-second "
            f"(median of {len(runs)})",
            statistics.median(r["events_per_cpu_s"] for r in runs),
            "events/s",
            floor=statistics.median(r["floor_events_per_cpu_s"] for r in runs),
            target_ratio=0.5,
        )
    if args.what in ("latency", "all"):
        result = bench_latency(args.seconds, delivery)
        print("latency at 10,000 events/s:", result, flush=True)
        figure("p99 sent -> durable in store at 10,000 events/s", result["p99_ms"], "ms",
               target=250, better="lower")  # fmt: skip
    if args.what in ("memory", "all"):
        for scheme in ("gs", "file"):
            result = bench_memory(args.seconds, scheme, delivery, args.idle_seconds)
            print("memory:", result, flush=True)
            target_idle, target_busy = (48, 64) if scheme == "gs" else (None, None)
            figure(f"RSS idle, {scheme}://", result["idle_rss_mib"], "MiB",
                   target=target_idle, better="lower")  # fmt: skip
            figure(f"RSS at 10,000 events/s, {scheme}://", result["peak_rss_mib"], "MiB",
                   target=target_busy, better="lower")  # fmt: skip
    if args.what == "profile":
        bench_profile()
    if args.what == "stages":
        bench_stages(args.events)
    if args.what in ("ready", "all"):
        for scheme in ("file", "gs"):
            result = bench_ready(scheme)
            print("ready:", result, flush=True)
            figure(f"ready after start, {scheme}:// (median)", result["median_s"], "s",
                   target=1.5, better="lower")  # fmt: skip


if __name__ == "__main__":
    main()
