"""Upload speed of the WORM destinations against local real servers.

    .venv/bin/python bench/bench_sinks.py [--seconds 4] [--concurrency 1,4,8]

Starts SeaweedFS (`weed mini`, S3 with Object Lock) and fake-gcs-server on 127.0.0.1
(the test fixtures' classes), then for each backend x object size (64 KiB, 1 MiB) x
uploads in flight (threads sharing one Destination) writes fresh objects with a
COMPLIANCE/Locked retention for about --seconds and prints objects/s, MB/s and the
speed-up over one upload in flight, and the CPU cores used by the client (this process)
and by the server while it ran. A speed-up well above 1 at >= 4 in flight shows the
destination does not serialize uploads (the sidecar keeps several in flight). Both
servers share this machine's cores with the client, so absolute figures are a floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers


import psutil
from tests.servers.fakegcs import FakeGCS
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.tcp_proxy import LoopbackProxy

from auditlock import sinks
from auditlock.sinks import Destination, LockMode, RetentionSpec
from bench.figures import figure

SPEC = RetentionSpec(timedelta(days=1), LockMode.LOCKED)
SIZES = {"64KiB": 64 * 1024, "1MiB": 1024 * 1024}


def cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds of a process and its children."""
    if pid is None:
        return 0.0
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        total += sum(child.cpu_times()[:2])
    return total


def measure(
    dest: Destination, size: int, in_flight: int, seconds: float, tag: str
) -> tuple[int, float]:
    """Upload distinct objects of `size` bytes with `in_flight` threads for ~`seconds`."""
    payload = os.urandom(size)
    deadline = time.perf_counter() + seconds
    counts = [0] * in_flight

    def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            # Distinct names and bytes, like consecutive segments of a stream.
            dest.put(f"{tag}/w{w}/{i:08d}", payload[:-8] + i.to_bytes(8, "big"), SPEC)
            i += 1
        counts[w] = i

    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        for f in [pool.submit(worker, w) for w in range(in_flight)]:
            f.result()
    return sum(counts), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="add this round-trip delay in front of each server (simulates a remote store)",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sinks-")))
        weed = stack.enter_context(SeaweedFS.started(work / "seaweedfs"))
        gcs = stack.enter_context(FakeGCS.started(work / "fakegcs"))
        s3_bucket = weed.make_bucket(object_lock=True)
        gs_bucket = gcs.make_bucket()
        pool = max(levels) * 2
        s3_endpoint, gs_endpoint = weed.endpoint, gcs.endpoint
        if args.latency_ms:
            delay = args.latency_ms / 1000
            s3_proxy = LoopbackProxy(int(weed.endpoint.rsplit(":", 1)[1]), delay=delay)
            gs_proxy = LoopbackProxy(gcs.port, delay=delay)
            stack.callback(s3_proxy.close)
            stack.callback(gs_proxy.close)
            s3_endpoint, gs_endpoint = s3_proxy.endpoint, gs_proxy.endpoint
        s3_options = weed.destination_options() | {"endpoint_url": s3_endpoint}
        gs_options = gcs.destination_options() | {"endpoint": gs_endpoint}
        servers = {"s3 (SeaweedFS)": weed, "gs (fake-gcs-server)": gcs}
        backends: dict[str, Destination] = {
            "s3 (SeaweedFS)": sinks.open(
                f"s3://{s3_bucket}/bench", **s3_options, max_pool_connections=pool
            ),
            "gs (fake-gcs-server)": sinks.open(f"gs://{gs_bucket}/bench", **gs_options),
        }
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"cpus={os.cpu_count()} load average={load} seconds/run={args.seconds} "
            f"added latency={args.latency_ms:g} ms"
        )
        header = (
            f"{'backend':<22}{'size':>7}{'in flight':>10}{'objects':>9}{'obj/s':>9}"
            f"{'MB/s':>8}{'x vs 1':>8}{'client cpu':>11}{'server cpu':>11}"
        )
        print(header)
        print("-" * len(header))
        for label, dest in backends.items():
            for size_label, size in SIZES.items():
                base: float | None = None
                for n in levels:
                    server_pid = servers[label].pid
                    client0, server0 = time.process_time(), cpu_seconds(server_pid)
                    count, elapsed = measure(dest, size, n, args.seconds, f"{size_label}-{n}")
                    client_cpu = (time.process_time() - client0) / elapsed
                    server_cpu = (cpu_seconds(server_pid) - server0) / elapsed
                    rate = count / elapsed
                    base = base or rate
                    print(
                        f"{label:<22}{size_label:>7}{n:>10}{count:>9}{rate:>9.1f}"
                        f"{rate * size / 1e6:>8.1f}{rate / base:>8.2f}"
                        f"{client_cpu:>10.2f}c{server_cpu:>10.2f}c"
                    )
                    if n == max(levels):
                        what = f"{label} {size_label}, {n} in flight"
                        figure(f"{what}: objects/s", rate, "obj/s")
                        figure(f"{what}: MB/s", rate * size / 1e6, "MB/s")
                        if n >= 4 and n != levels[0]:
                            # Uploads overlap when n in flight beat one by a wide margin.
                            figure(f"{what}: speed-up vs 1", rate / base, "x", target=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
