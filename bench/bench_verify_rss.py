"""`auditlock verify`'s peak memory: on a large honest trail, and on each hostile store.

    .venv/bin/python bench/bench_verify_rss.py [--events 1000000] [--segment-events 1000]

Each figure is the peak RSS (VmHWM) of a real `auditlock verify` child process and its
wall time. An honest trail is verified at a quarter of --events and at --events: the
peak must not grow with the trail (ids are kept in bounded memory, seen_ids.py). The
hostile stores are a small honest ledger (10,000 events) with one attack
each (issue 12 point 10, issue 13 point 1): a segment symlinked to /dev/zero, a FIFO as a
segment, a 1 MiB gzip bomb inflating to 1 GiB, a sparse 4 GiB checkpoint, a symlink to
/etc/passwd, a checkpoint and a line nested 100,000 deep. Each must end in findings
(exit 1), within the time limit, with memory bounded by the FORMAT.md size limits
(a segment is at most 64 MiB), not by what the attacker planted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers.verify_child import run_verify_child

from bench.bench_ledger import build
from bench.figures import figure

TIMEOUT_S = 600
HOSTILE_RSS_TARGET_MIB = 256  # the largest legal segment (64 MiB) held, split and hashed
GROWTH_TARGET = 1.1  # peak RSS with 4 x the events, over peak RSS with 1 x: within noise


def _segments(root: Path) -> list[Path]:
    return sorted(root.glob("streams/*/*/seg-*"))


def _checkpoints(root: Path) -> list[Path]:
    return sorted(root.glob("streams/*/*/ckpt-*"))


def _replace(path: Path) -> Path:
    path.unlink()
    return path


def dev_zero(root: Path) -> None:
    _replace(_segments(root)[3]).symlink_to("/dev/zero")


def fifo(root: Path) -> None:
    os.mkfifo(_replace(_segments(root)[3]))


def gzip_bomb(root: Path) -> None:
    seg = _segments(root)[3]
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\n" * (1 << 20)
    bomb = b"".join([*(deflate.compress(block) for _ in range(1024)), deflate.flush()])
    seg.unlink()
    seg.with_name(seg.name + ".gz").write_bytes(bomb)


def sparse_4gib(root: Path) -> None:
    with _replace(_checkpoints(root)[3]).open("wb") as f:
        f.truncate(4 << 30)


def passwd(root: Path) -> None:
    _replace(_segments(root)[3]).symlink_to("/etc/passwd")


def deep_checkpoint(root: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    _replace(_checkpoints(root)[3]).write_bytes(b'{"format":' + deep + b"}\n" + b"A" * 88 + b"\n")


def deep_line(root: Path) -> None:
    seg = _segments(root)[3]
    lines = seg.read_bytes().split(b"\n")
    lines[5] = b'{"epoch":0,"event":' + b"[" * 100_000 + b"]" * 100_000 + lines[5][-120:]
    _replace(seg).write_bytes(b"\n".join(lines))


ATTACKS: dict[str, Callable[[Path], None]] = {
    "segment symlinked to /dev/zero": dev_zero,
    "FIFO as a segment": fifo,
    "1 MiB gzip bomb (1 GiB inflated)": gzip_bomb,
    "sparse 4 GiB checkpoint": sparse_4gib,
    "segment symlinked to /etc/passwd": passwd,
    "checkpoint nested 100,000 deep": deep_checkpoint,
    "line nested 100,000 deep": deep_line,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--segment-events", type=int, default=1000)
    args = parser.parse_args()
    from auditlock import sinks

    print(f"# bench_verify_rss: {args.events} events, {args.segment_events} per segment")
    with tempfile.TemporaryDirectory() as tmp:
        peaks = []
        for events in (args.events // 4, args.events):
            big = Path(tmp) / f"honest-{events}"
            build(events, args.segment_events, sinks.open(f"file://{big}", fsync=False))
            run = run_verify_child(["verify", f"file://{big}", "--json"], TIMEOUT_S)
            doc = run.json()
            assert run.code == 0 and doc["events_verified"] == events, run.out[:2000]
            peaks.append(run.peak_rss_mib)
            figure(f"verify peak RSS, {events:,} events", run.peak_rss_mib, "MiB",
                   better="lower")  # fmt: skip
            print(f"honest trail: {events:,} events, exit {run.code}, peak RSS "
                  f"{run.peak_rss_mib:.0f} MiB, {run.seconds:.1f} s wall")  # fmt: skip
            shutil.rmtree(big)
        # Peak RSS must not grow with the trail (issue 19 point 3): 4 x the events.
        figure("verify peak RSS growth, 4 x the events", peaks[1] / peaks[0], "x",
               target=GROWTH_TARGET, better="lower")  # fmt: skip
        for label, attack in ATTACKS.items():
            root = Path(tmp) / f"hostile-{len(os.listdir(tmp))}"
            build(10_000, 500, sinks.open(f"file://{root}", fsync=False))
            attack(root)
            run = run_verify_child(["verify", f"file://{root}", "--json"], TIMEOUT_S)
            codes = sorted({f["code"] for f in run.json()["findings"]})
            assert run.code == 1, (label, run.code, run.err[-2000:])
            figure(f"verify peak RSS, {label}", run.peak_rss_mib, "MiB",
                   target=HOSTILE_RSS_TARGET_MIB, better="lower")  # fmt: skip
            print(f"{label}: exit {run.code}, peak RSS {run.peak_rss_mib:.0f} MiB, "
                  f"{run.seconds:.1f} s wall, findings {', '.join(codes)}")  # fmt: skip


if __name__ == "__main__":
    main()
