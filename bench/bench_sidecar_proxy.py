"""Latency the access proxy adds to each request.

    .venv/bin/python bench/bench_sidecar_proxy.py [--requests 3000]

Starts a small aiohttp app (the "application", its own process) and a sidecar process
with the access proxy in front of it (file:// store, events recorded as usual), then
sends --requests sequential GETs over one keep-alive connection, first straight to the
app, then through the proxy, and prints p50/p99 of each and the difference.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

from tests.servers.sidecar import SidecarProcess, access_proxy_config, free_port

from bench.figures import figure

APP = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def hello(request):
        return web.Response(text="hello " * 20)

    app = web.Application()
    app.router.add_get("/api/orders/{id}", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


def timings(port: int, requests: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    headers = {"X-Forwarded-User": "alice", "X-Request-Id": "bench"}
    for i in range(requests + 100):
        started = time.perf_counter()
        conn.request("GET", f"/api/orders/{i}", headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        if i >= 100:  # warm-up excluded
            out.append(time.perf_counter() - started)
    conn.close()
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return round(1000 * values[min(len(values) - 1, int(len(values) * q))], 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    app_port = free_port()
    app = subprocess.Popen([sys.executable, "-c", APP, str(app_port)])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            config, proxy_port = access_proxy_config(workdir, f"http://127.0.0.1:{app_port}")
            proc = SidecarProcess(workdir, config)
            try:
                proc.start()
                time.sleep(0.5)
                print(f"load average: {os.getloadavg()}")
                direct = timings(app_port, args.requests)
                proxied = timings(proxy_port, args.requests)
                assert proc.terminate() == 0
            finally:
                proc.kill()
    finally:
        app.terminate()
        app.wait(10)
    result = {
        "requests": args.requests,
        "direct_p50_ms": pct(direct, 0.5),
        "direct_p99_ms": pct(direct, 0.99),
        "proxy_p50_ms": pct(proxied, 0.5),
        "proxy_p99_ms": pct(proxied, 0.99),
        "added_p50_ms": round(pct(proxied, 0.5) - pct(direct, 0.5), 3),
        "added_p99_ms": round(pct(proxied, 0.99) - pct(direct, 0.99), 3),
    }
    print("access proxy:", result)
    figure("access proxy added latency, p50", result["added_p50_ms"], "ms", better="lower")
    figure("access proxy added latency, p99", result["added_p99_ms"], "ms", better="lower")


if __name__ == "__main__":
    main()
