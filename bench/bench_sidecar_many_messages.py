"""Many Forward connections with big messages at once: the collector's peak RSS (VmHWM)
against the container's 128 MiB limit, each run on a fresh collector process.

    .venv/bin/python bench/bench_sidecar_many_messages.py [--runs 5] [--connections 16]
        [--case unfinished|gzip] [--cpu N]

unfinished  each connection sends 7 MiB of a Forward-mode message that never completes
            (as tests/integration/test_sidecar_connection_limits.py): the budget for
            unfinished messages lets one leader read on, the others wait until their
            frame timeout (5 s) or the leader's events pass the per-message limit.
gzip        each connection sends a CompressedPackedForward message of ~24 KiB whose
            8 MiB of events pass the per-message limit when decoded.

`--cpu N` pins this process, its sending threads and the collector to one CPU, as on a
slower machine: connections then finish their reads in a different order.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

from tests.servers.hostile_intake import peak_rss_mib
from tests.servers.sidecar import make_config, sidecar_process

from auditlock.sidecar.sources.forward.protocol import pack_event_time
from bench.figures import figure

LIMIT_MIB = 128
T = 1_764_428_645
RECORD = {"category": "access", "action": "read", "actor": "ok", "target": "t"}


def unfinished_frame() -> bytes:
    entry = msgpack.packb([T, RECORD])
    count = (7 * 1024 * 1024) // len(entry)
    head = b"\x93" + msgpack.packb("app.access") + b"\xdd" + (count + 1).to_bytes(4, "big")
    return head + entry * count


def gzip_frame(number: int) -> bytes:
    entry = msgpack.packb([pack_event_time(T * 10**9), RECORD])
    blob = gzip.compress(entry * ((8 * 1024 * 1024 - 4096) // len(entry)), 9)
    return bytes(msgpack.packb(["app.access", blob, {"chunk": f"c{number}", "compressed": "gzip"}]))


def run(case: str, connections: int) -> tuple[float, float]:
    """(peak RSS MiB, seconds) on a fresh collector."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = make_config(workdir, ports=True, sources={"forward": {"frame_timeout_seconds": 5}})
        frames = (
            [unfinished_frame()] * connections
            if case == "unfinished"
            else [gzip_frame(n) for n in range(connections)]
        )
        with sidecar_process(workdir, config) as proc:
            proc.start()

            def send(frame: bytes) -> None:
                with socket.create_connection(("127.0.0.1", proc.forward_port), timeout=10) as s:
                    s.settimeout(60)
                    with contextlib.suppress(OSError):
                        s.sendall(frame)
                        s.recv(100)  # closed: frame timeout or too_large

            started = time.monotonic()
            threads = [threading.Thread(target=send, args=(frame,)) for frame in frames]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return peak_rss_mib(proc.pid), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--case", choices=["unfinished", "gzip"], default="unfinished")
    parser.add_argument("--cpu", type=int, default=None, help="pin everything to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # inherited by the collector process
    print(f"load average before: {os.getloadavg()}")
    peaks = []
    for number in range(args.runs):
        peak, seconds = run(args.case, args.connections)
        peaks.append(peak)
        print(f"run {number + 1}: peak RSS {peak:6.1f} MiB  {seconds:5.1f} s", flush=True)
    figure(
        f"peak RSS, {args.connections} connections, {args.case}",
        round(max(peaks), 1),
        "MiB",
        target=LIMIT_MIB,
        better="lower",
    )


if __name__ == "__main__":
    main()
