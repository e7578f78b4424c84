"""Run a collector and an app side by side in a network namespace of their own, as in a pod.

A pod's containers share one loopback, and the example app talks to the collector on
the fixed 127.0.0.1:24224. Started with `unshare --net`, this script brings the
namespace's loopback up, so those fixed ports are private to this "pod" (no clash with
other tests on the machine), then:

1. starts `python -m auditlock.sidecar --config CONFIG` and waits for /readyz,
2. runs the app's command to its end (killed after --app-seconds),
3. waits until the collector has taken in (received, filtered or rejected) as many
   records as the app said it sent, then stops it with SIGTERM (a clean shutdown stores
   everything and closes the stream),
4. prints one JSON line with the collector's intake counters and both exit codes.

    unshare --net python -m tests.e2e.netns_pod --config C --health-port P --records N \\
        -- python app.py

The environment is passed to both processes (AUDITLOCK_SIDECAR__* reaches the
collector the way the injected pod's env does).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

_SAMPLE = re.compile(r"^auditlock_sidecar_events_(received|filtered|rejected)_total\{.*\} (\S+)$")


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            text: str = answer.read().decode()
            return text
    except OSError:
        return None


def _counters(health: str) -> dict[str, int]:
    counts = {"received": 0, "filtered": 0, "rejected": 0}
    for line in (_get(f"{health}/metrics") or "").splitlines():
        match = _SAMPLE.match(line)
        if match:
            counts[match.group(1)] += int(float(match.group(2)))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--health-port", type=int, required=True)
    parser.add_argument("--records", type=int, required=True, help="records the app sends")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--app-seconds", type=float, default=30.0, help="the app's time limit")
    parser.add_argument("app", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    app = args.app[1:] if args.app[:1] == ["--"] else args.app
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    health = f"http://127.0.0.1:{args.health_port}"
    deadline = time.monotonic() + args.timeout
    collector = subprocess.Popen(
        [sys.executable, "-m", "auditlock.sidecar", "--config", args.config]
    )
    try:
        while _get(f"{health}/readyz") is None:
            if collector.poll() is not None or time.monotonic() > deadline:
                print(json.dumps({"error": "collector not ready"}), flush=True)
                return 1
            time.sleep(0.05)
        runner = subprocess.Popen(app)
        try:
            app_code: int | str = runner.wait(args.app_seconds)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
            app_code = "still running after --app-seconds: killed"
        counts = _counters(health)
        while sum(counts.values()) < args.records and time.monotonic() < deadline:
            time.sleep(0.1)
            counts = _counters(health)
        collector.send_signal(signal.SIGTERM)
        collector_code = collector.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
    print(json.dumps({**counts, "app": app_code, "collector": collector_code}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
