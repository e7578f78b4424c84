"""`auditlock report` from the review cache, beside `auditlock verify` on the same trail.

    .venv/bin/python bench/bench_report.py [--events 10000000] [--streams 10] [--trail DIR]
    R=~/.cache/auditlock/bench-review; .venv/bin/python bench/bench_report.py \
        --trail $R/trail-100x100000 --public-key $R/keys/signing.pub  # bench_review.py's trail

Writes a synthetic trail (`auditlock synth`'s events: Secret reads, exec, RoleBinding
updates, ConfigMap patches, ~10% failures; gzip segments of 1,000 events) or reuses
--trail, then in one run, one after the other:

  verify   `ledger.verify` of the trail (what `auditlock verify` does), wall seconds;
  load     `review.load` into an empty cache (verify + the events table);
  report   `auditlock report`'s work from the cache: `review.load` answered from the cache,
           every figure's SQL, the checkpoints read again for the cadence plot, the plots
           drawn and the HTML written. Target (issue 16 point 9): at most 30 s.

The machine's speed varies about 2x from hour to hour, so verify's time is printed beside
the report's, and the ratio report / verify.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.figures import figure

REPORT_TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--trail", type=Path, help="reuse (or keep) the trail in this folder")
    parser.add_argument(
        "--public-key", type=Path, help="the key of an existing --trail (e.g. bench_review.py's)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        trail = args.trail or Path(tmp) / "trail"
        key = args.public_key or trail.parent / f"{trail.name}.pub.pem"
        if not (trail / "keys").is_dir():
            _synthesize(trail, key, args.events, args.streams)
        run(f"file://{trail}", key, Path(tmp))


def _synthesize(trail: Path, key: Path, events: int, streams: int) -> None:
    from auditlock import sinks
    from auditlock.ledger.keys import Signer, generate, public_pem
    from auditlock.ledger.synth import synthesize

    signer = Signer(generate())
    trail.mkdir(parents=True, exist_ok=True)
    key.write_bytes(public_pem(signer.public))
    started = time.perf_counter()
    stats = synthesize(
        sinks.open(f"file://{trail}", fsync=False), signer,
        streams=streams, events=events // streams, compress=True,
    )  # fmt: skip
    print(f"synth: {stats.events:,} events in {stats.streams} streams, {stats.objects:,} objects, "
          f"{stats.bytes / 2**20:,.0f} MiB, {time.perf_counter() - started:.0f} s")  # fmt: skip


def run(url: str, key_path: Path, tmp: Path) -> None:
    from auditlock import sinks
    from auditlock.ledger.keys import load_public_key
    from auditlock.ledger.verify import VerifyOptions, verify
    from auditlock.report import render_report
    from auditlock.review import LoadOptions, load

    key = load_public_key(key_path)
    print(f"# bench_report: {url}, pid {os.getpid()}, load average {os.getloadavg()[0]:.1f}")

    started, cpu = time.perf_counter(), time.process_time()
    report = verify(sinks.open(url), VerifyOptions(public_keys=[key]))
    verify_s = time.perf_counter() - started
    assert report.ok, report.summary()
    events = report.events_verified
    print(f"verify: {events:,} events in {verify_s:.1f} s ({time.process_time() - cpu:.1f} s CPU)")

    cache = tmp / "cache"
    cache.mkdir(mode=0o700)
    options = LoadOptions(public_keys=[key], cache_root=cache)
    started = time.perf_counter()
    load(url, options).close()
    load_s = time.perf_counter() - started
    print(f"load (verify + events table into the cache): {load_s:.1f} s "
          f"({load_s / verify_s:.2f}x verify)")  # fmt: skip

    started, cpu = time.perf_counter(), time.process_time()
    trail = load(url, options)
    assert trail.from_cache, trail.cache_note
    html = render_report([trail], anchors=[key])
    (tmp / "report.html").write_text(html)
    report_s = time.perf_counter() - started
    report_cpu = time.process_time() - cpu
    trail.close()
    rss = _peak_rss_mib()
    print(f"report from the cache: {report_s:.1f} s ({report_cpu:.1f} s CPU, all threads; "
          f"{report_s / verify_s:.2f}x verify), {len(html.encode()):,} bytes of HTML, "
          f"peak RSS of this process {rss:.0f} MiB")  # fmt: skip
    figure(f"report from the cache ({events:,} events)", report_s, "s",
           target=REPORT_TARGET_S, better="lower")  # fmt: skip
    figure(f"verify alone, same trail, same run ({events:,} events)", verify_s, "s",
           better="lower")  # fmt: skip


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    main()
