"""Review over a large synthetic trail, each figure beside `auditlock verify` on the same
trail in the same run (issue 16 point 9; docs/benchmarks.md, "Review").

    .venv/bin/python bench/bench_review.py [--streams 100] [--events 100000]
        [--trails-dir ~/.cache/auditlock/bench-review]

The trail (streams x events, `auditlock synth`, 1000 events per segment) is generated
once into --trails-dir, outside the repository, and reused. Every step is a real
`auditlock` child process (its wall time, its CPU seconds, its own peak RSS):

1. `verify` alone;
2. the first `query` (verify + load into a fresh cache): target <= 1.3 x step 1;
3. the same query again, from the cache: target <= 1 s;
4. `export --format parquet` from the cache: target >= 200,000 events/s; beside it, its
   floor in the same run: DuckDB alone copying the same cached table into one Parquet
   file (no partitions, the export's compression);
5. memory: the first query's peak RSS on the whole trail and on a tenth of it (the same
   streams, hard-linked): it must not grow with the trail beyond DuckDB's own limit
   (`--memory-limit`, spilling to a temporary directory beyond it).

`--cache-dir DIR` reuses a warm cache of the same trail (left by an earlier run's step 2
with `--keep-cache DIR`) and runs only steps 3 and 4, to repeat them on a noisy machine.

Children run as an installed auditlock does: with compiled bytecode (pip compiles at
install; this VM's environment sets PYTHONDONTWRITEBYTECODE, under which every start
compiles some 90 modules again, a quarter of a repeated query). Their bytecode goes to
--trails-dir/pycache, written by step 1.

Steps that also read from the cache (the `report` command) add themselves to
CACHE_STEPS: a function taking the BenchContext, run after step 4.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers.verify_child import VerifyRun, run_verify_child

from bench.figures import figure

TIMEOUT_S = 4 * 3600
COUNT_SQL = "SELECT count(*) AS n FROM events"


@dataclass
class Run:
    code: int
    out: str
    err: str
    wall: float
    cpu: float  # user + system seconds of the child and its threads
    peak_rss_mib: float


@dataclass
class BenchContext:
    """What a step reading from the cache needs: the trail, its key, the warm cache."""

    url: str
    public_key: Path
    cache_dir: Path
    events: int
    work: Path  # a scratch directory, removed at the end
    verify: Run  # step 1, to set figures beside

    def cli(self, *args: str) -> Run:
        return run_cli(list(args), {"AUDITLOCK_CACHE_DIR": str(self.cache_dir)})


# Steps run after the export, with a warm cache (e.g. "a report from the cache <= 30 s").
CACHE_STEPS: list[Callable[[BenchContext], None]] = []


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Run:
    return _run_child(lambda: run_verify_child(args, TIMEOUT_S), env)


def _run_child(start: Callable[[], Any], env: dict[str, str] | None) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        child = start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(child.code, child.out, child.err, child.seconds, cpu, child.peak_rss_mib)


FLOOR_CHILD = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET memory_limit = '512MB'; SET preserve_insertion_order = false")
files = sys.argv[1:-1]
con.execute(f"COPY (SELECT * EXCLUDE (stream) FROM read_parquet({files})) TO '{sys.argv[-1]}' "
            "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)")
"""


def copy_floor(cache_dir: Path, out: Path) -> Run:
    """The export's floor: DuckDB alone copying the cached table into one Parquet file."""
    parts = sorted(str(p) for p in cache_dir.glob("*/part-*.parquet"))
    assert parts, f"no cache entry in {cache_dir}"

    def start() -> Any:
        began = time.monotonic()
        child = subprocess.run([sys.executable, "-c", FLOOR_CHILD, *parts, str(out)],
                               capture_output=True, timeout=TIMEOUT_S)  # fmt: skip
        return VerifyRun(child.returncode, "", child.stderr.decode(errors="replace"), 0.0,
                         time.monotonic() - began)  # fmt: skip

    return _run_child(start, None)


def ensure_trail(root: Path, streams: int, events: int) -> tuple[str, Path]:
    """The synthetic trail of `streams` x `events` under `root` (generated once)."""
    keys = root / "keys"
    if not (keys / "signing.key").exists():
        subprocess.run([sys.executable, "-m", "auditlock", "keys", "generate", "--out",
                        str(keys)], check=True)  # fmt: skip
    trail = root / f"trail-{streams}x{events}"
    done = root / f"{trail.name}.complete"
    if not done.exists():
        shutil.rmtree(trail, ignore_errors=True)
        print(f"generating {streams} x {events} events into {trail} (once)", flush=True)
        subprocess.run(
            [sys.executable, "-m", "auditlock", "synth", "--store", f"file://{trail}",
             "--key", str(keys / "signing.key"), "--streams", str(streams), "--events",
             str(events), "--interval-ms", "50", "--start", "2026-01-01T23:00:00Z",
             "--no-fsync"],
            check=True,
        )  # fmt: skip
        done.write_text("")
    return f"file://{trail}", keys / "signing.pub"


def tenth(trail_url: str, work: Path) -> str:
    """The first tenth of the trail's streams, hard-linked (regular files, no copy)."""
    src = Path(trail_url.removeprefix("file://"))
    dst = work / "tenth"
    streams = sorted((src / "streams").iterdir())
    (dst / "streams").mkdir(parents=True)
    shutil.copytree(src / "keys", dst / "keys", copy_function=os.link)
    for stream in streams[: max(1, len(streams) // 10)]:
        shutil.copytree(stream, dst / "streams" / stream.name, copy_function=os.link)
    return f"file://{dst}"


def _show(label: str, run: Run) -> None:
    print(f"{label}: exit {run.code}, wall {run.wall:.2f} s, CPU {run.cpu:.2f} s, "
          f"peak RSS {run.peak_rss_mib:.0f} MiB", flush=True)  # fmt: skip
    if run.code not in (0,):
        print(run.err[-3000:], file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=100_000, help="per stream")
    parser.add_argument(
        "--trails-dir", type=Path, default=Path.home() / ".cache" / "auditlock" / "bench-review"
    )
    parser.add_argument("--memory-limit", default="512MB")
    parser.add_argument("--cache-dir", type=Path, help="a warm cache: only steps 3 and 4")
    parser.add_argument("--keep-cache", type=Path, help="move step 2's cache here at the end")
    args = parser.parse_args()
    total = args.streams * args.events
    url, pub = ensure_trail(args.trails_dir, args.streams, args.events)
    work = Path(tempfile.mkdtemp(prefix="bench-review-", dir=args.trails_dir))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(args.trails_dir / "pycache")
    try:
        key = ["--public-key", str(pub)]
        query = ["query", url, *key, "--memory-limit", args.memory_limit, "--sql", COUNT_SQL,
                 "--format", "csv"]  # fmt: skip
        cache_dir = args.cache_dir or work / "cache"
        cache = {"AUDITLOCK_CACHE_DIR": str(cache_dir)}
        if args.cache_dir is None:
            verify = run_cli(["verify", url, *key])
            _show(f"1. verify {total} events", verify)
            first = run_cli(query, cache)
            _show("2. first query (verify + load into the cache)", first)
            assert first.code == 0 and first.out.split() == ["n", str(total)], first.out
        again = run_cli(query, cache)
        _show("3. the same query from the cache", again)
        assert "from the cache" in again.err, again.err
        filtered = run_cli(
            ["query", url, *key, "--category", "data", "--actor", "user001@example.com",
             "--format", "csv"], cache,
        )  # fmt: skip
        _show("3b. a filtered query from the cache (rows as CSV)", filtered)
        exported = run_cli(["export", url, *key, "--format", "parquet", "--out",
                            str(work / "export")], cache)  # fmt: skip
        _show("4. export to Parquet from the cache", exported)
        assert exported.code == 0, exported.err
        shutil.rmtree(work / "export")
        floor = copy_floor(cache_dir, work / "floor.parquet")
        _show("4b. floor: DuckDB copying the cached table into one Parquet file", floor)
        assert floor.code == 0, floor.err
        figure("review: repeated query from the cache (wall)", round(again.wall, 3), "s",
               target=1.0, better="lower")  # fmt: skip
        figure("review: repeated query from the cache (CPU)", round(again.cpu, 3), "s")
        figure("review: filtered query from the cache (wall)", round(filtered.wall, 3), "s")
        figure("review: Parquet export from the cache", round(total / exported.wall),
               "events/s", target=200_000, floor=round(total / floor.wall))  # fmt: skip
        figure("review: Parquet export, events per CPU-second", round(total / exported.cpu),
               "events/s", floor=round(total / floor.cpu))  # fmt: skip
        if args.cache_dir is not None:
            return
        small_url = tenth(url, work)
        small = run_cli(["query", small_url, *key, "--memory-limit", args.memory_limit,
                         "--sql", COUNT_SQL, "--format", "csv"],
                        {"AUDITLOCK_CACHE_DIR": str(work / "cache-tenth")})  # fmt: skip
        _show("5. first query on a tenth of the trail", small)

        figure("review: verify alone (wall)", round(verify.wall, 2), "s")
        figure("review: first query (wall)", round(first.wall, 2), "s",
               floor=round(verify.wall, 2))  # fmt: skip
        figure("review: first query / verify, wall", round(first.wall / verify.wall, 3), "x",
               target=1.3, better="lower")  # fmt: skip
        figure("review: first query / verify, CPU seconds", round(first.cpu / verify.cpu, 3),
               "x")  # fmt: skip
        figure("review: first query peak RSS", round(first.peak_rss_mib, 1), "MiB",
               floor=round(verify.peak_rss_mib, 1))  # fmt: skip
        figure("review: first query peak RSS, whole trail / a tenth",
               round(first.peak_rss_mib / small.peak_rss_mib, 3), "x", target=1.25,
               better="lower")  # fmt: skip
        context = BenchContext(url, pub, work / "cache", total, work, verify)
        for step in CACHE_STEPS:
            step(context)
        if args.keep_cache is not None:
            shutil.rmtree(args.keep_cache, ignore_errors=True)
            shutil.move(work / "cache", args.keep_cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
              f"{os.getloadavg()[0]:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
