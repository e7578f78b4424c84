"""Operator benchmarks (figures go to docs/benchmarks.md, section "Operator").

1. Admission: 2,000 Pod AdmissionReviews at concurrency 20 against the injection webhook
   over TLS (the server in its own process, as in a cluster; keep-alive connections like
   the API server's). Prints p50 / p99 / max latency and requests/s. Target p99 <= 15 ms.
2. Policies: 50 AuditPolicies created together on the real test kube-apiserver; prints
   the time until all 50 report Ready=True.

    .venv/bin/python bench/bench_operator.py [--requests 2000] [--concurrency 20]
        [--policies 50] [--skip-policies]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.figures import figure  # noqa: E402


def _policy_registry(count: int = 20) -> Any:
    from auditlock.operator.registry import PolicyEntry, PolicyRegistry
    from auditlock.operator.sidecar_config import config_map_data
    from auditlock.policy import parse_spec

    registry = PolicyRegistry()
    for i in range(count):
        spec = parse_spec(
            {
                "selector": {"matchLabels": {"app": f"app-{i}"}},
                "destination": {"s3": {"bucket": f"bucket-{i}", "prefix": "trail"}},
                "retention": {"days": 365},
            }
        )
        registry.put(
            PolicyEntry("shop", f"p{i:02d}", f"u{i}", 1, spec, config_map_data(spec)[1], f"{i}")
        )
    registry.mark_synced()
    return registry


def _serve(cert_dir: str, port_queue: Any, baseline: bool = False) -> None:
    from auditlock.operator import injection, tls
    from auditlock.operator.webhook_server import Listener, WebhookServer

    cert = tls.self_signed(["127.0.0.1"], Path(cert_dir))

    async def static() -> None:
        # Baseline: the same TLS + aiohttp stack answering a fixed review, to tell the
        # machine's and the client's share of the latency from the webhook's own work.
        from aiohttp import web

        answer = json.dumps({"response": {"uid": "u", "allowed": True, "patch": "W10="}})

        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(text=answer, content_type="application/json")

        app = web.Application()
        app.router.add_post("/mutate-pods", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cert.server_context())
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    async def main() -> None:
        server = WebhookServer(
            registry=_policy_registry(),
            injection=injection.InjectionSettings(
                cluster="test", image="sidecar:bench", native_sidecar=True
            ),
            listeners=[Listener("127.0.0.1", 0, cert.server_context())],
        )
        await server.start()
        port_queue.put(server.bound_ports[0])
        await asyncio.Event().wait()

    asyncio.run(static() if baseline else main())


def _review(i: int) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"api-{i}",
            "namespace": "shop",
            "labels": {"app": f"app-{i % 20}", "tier": "web"},
            "annotations": {"team": "payments"},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/app:1.2.3",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": f"E{k}", "value": "v" * 20} for k in range(10)],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"uid-{i}",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": pod,
            },
        }
    ).encode()


async def _load(port: int, ca_pem: bytes, total: int, concurrency: int) -> list[float]:
    import aiohttp

    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    url = f"https://127.0.0.1:{port}/mutate-pods"
    bodies = [_review(i) for i in range(total)]
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=ctx)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as http:
        # Warm the connections (TLS handshakes happen once per connection, as with the
        # API server's keep-alive client).
        await asyncio.gather(
            *(http.post(url, data=bodies[0], headers=headers) for _ in range(concurrency))
        )

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                began = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as resp:
                    answer = await resp.json()
                latencies.append(time.perf_counter() - began)
                assert resp.status == 200 and "patch" in answer["response"], answer

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _load_curl(port: int, ca_file: Path, total: int, concurrency: int) -> list[float]:
    """The same load from curl (C, libcurl): `--parallel` keeps `concurrency` keep-alive
    connections busy and reports each transfer's time, so the client's own cost is small
    next to a Python client's on a shared 2-core machine."""
    import subprocess

    workdir = Path(tempfile.mkdtemp(prefix="auditlock-bench-curl-"))
    bodies = []
    for i in range(50):
        path = workdir / f"review-{i}.json"
        path.write_bytes(_review(i))
        bodies.append(path)
    url = f"https://127.0.0.1:{port}/mutate-pods"
    lines = []
    for i in range(total):
        lines += [
            f'url = "{url}"',
            f'data-binary = "@{bodies[i % len(bodies)]}"',
            'header = "Content-Type: application/json"',
            'output = "/dev/null"',
            f'cacert = "{ca_file}"',
            "http1.1",
            'write-out = "%{time_total} %{time_appconnect} %{http_code}\\n"',
            "next",
        ]
    config = workdir / "curl.cfg"
    config.write_text("\n".join(lines[:-1]) + "\n")
    out = subprocess.run(
        [
            "curl", "--silent", "--parallel", "--parallel-immediate",
            "--parallel-max", str(concurrency), "--config", str(config),
        ],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    latencies = []
    handshakes = 0
    for line in out.stdout.splitlines():
        seconds, tls_done, code = line.split()
        assert code == "200", line
        if float(tls_done) > 0:
            # A new connection: the API server keeps its connections to a webhook alive,
            # so its TLS handshake is left out of the request's latency.
            handshakes += 1
            latencies.append(float(seconds) - float(tls_done))
        else:
            latencies.append(float(seconds))
    print(f"  curl opened {handshakes} TLS connections for {len(latencies)} requests")
    return latencies


def bench_admission(
    total: int, concurrency: int, baseline: bool = False, client: str = "aiohttp"
) -> None:
    cert_dir = tempfile.mkdtemp(prefix="auditlock-bench-")
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(cert_dir, ports, baseline), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=30)
        ca_pem = (Path(cert_dir) / "ca.crt").read_bytes()
        began = time.perf_counter()
        if client == "curl":
            latencies = _load_curl(port, Path(cert_dir) / "ca.crt", total, concurrency)
        else:
            latencies = asyncio.run(_load(port, ca_pem, total, concurrency))
        elapsed = time.perf_counter() - began
    finally:
        proc.terminate()
        proc.join(10)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    what = "baseline (static answer, same TLS stack)" if baseline else "admission"
    what += f" [{client} client]"
    print(
        f"{what}: {len(latencies)} AdmissionReviews over TLS, concurrency {concurrency}: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1] * 1000:.2f} ms, "
        f"{len(latencies) / elapsed:.0f} req/s  (target p99 <= 15 ms: "
        f"{'PASS' if p99 <= 15 else 'MISS'})"
    )
    if not baseline:
        figure(f"admission p50 (c={concurrency})", p50, "ms", better="lower")
        figure(f"admission p99 (c={concurrency})", p99, "ms", target=15, better="lower")


def bench_policies(count: int) -> None:
    from kubernetes import client
    from tests.servers.auditlock_operator import apply_crd, start_operator
    from tests.servers.kube_controlplane import KubeControlPlane

    workdir = Path(tempfile.mkdtemp(prefix="auditlock-bench-kube-"))
    with KubeControlPlane(workdir) as kube:
        apply_crd(kube)
        running = start_operator(kube, audit_intake=False, refresh_seconds=60, register=False)
        try:
            namespace = kube.create_namespace()
            trail = workdir / "trail"

            def create(i: int) -> None:
                body = {
                    "apiVersion": "auditlock.io/v1alpha1",
                    "kind": "AuditPolicy",
                    "metadata": {"name": f"bench-{i:03d}"},
                    "spec": {
                        "selector": {"matchLabels": {"app": f"app-{i}"}},
                        "destination": {"file": {"path": str(trail / str(i))}},
                        "retention": {"days": 30},
                    },
                }
                with kube.api_client() as api:
                    client.CustomObjectsApi(api).create_namespaced_custom_object(
                        "auditlock.io", "v1alpha1", namespace, "auditpolicies", body
                    )

            began = time.perf_counter()
            with ThreadPoolExecutor(10) as pool:
                list(pool.map(create, range(count)))
            applied = time.perf_counter() - began
            with kube.api_client() as api:
                custom = client.CustomObjectsApi(api)
                while True:
                    items = custom.list_namespaced_custom_object(
                        "auditlock.io", "v1alpha1", namespace, "auditpolicies"
                    )["items"]
                    ready = sum(
                        1
                        for p in items
                        for c in (p.get("status") or {}).get("conditions") or []
                        if c["type"] == "Ready" and c["status"] == "True"
                    )
                    if ready == count:
                        break
                    if time.perf_counter() - began > 300:
                        raise SystemExit(f"only {ready}/{count} Ready after 300 s")
                    time.sleep(0.05)
            took = time.perf_counter() - began
            print(
                f"policies: {count} AuditPolicies applied together (create calls took "
                f"{applied:.2f} s): all Ready after {took:.2f} s"
            )
            figure(f"{count} policies applied together: all Ready", took, "s", better="lower")
        finally:
            running.thread.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--skip-policies", action="store_true")
    parser.add_argument("--client", choices=["curl", "aiohttp"], default="curl")
    parser.add_argument(
        "--baseline", action="store_true", help="also measure a static TLS answer (overhead)"
    )
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.baseline:
        bench_admission(args.requests, args.concurrency, baseline=True, client=args.client)
    bench_admission(args.requests, args.concurrency, client=args.client)
    if not args.skip_policies:
        bench_policies(args.policies)


if __name__ == "__main__":
    main()
