"""Certificate issuance when many pods start at once (figures go to docs/benchmarks.md,
section "Certificate issuance").

The real operator (its HTTPS server, `/v1/certificates`) on the rig's real
kube-apiserver: N pods exist, each with a pod-bound projected token (audience
auditlock-certificates) minted beforehand by the TokenRequest API, as the kubelet would.
Then all N collectors ask at the same instant, each on its own TLS connection; every
answer must be 201. Each request costs a TokenReview, a pod read, an Ed25519 signature
and two fsynced writes to the policy's file:// destination (the claim record of the
collector container, the certificate). Before each burst every pod's collector is
reported running with a new container id (a kubelet's status patch, not timed): one key
per container. Prints p50 / p99 / max latency
over all rounds, and as the floor the median of one TokenReview alone (the API call
every issuance must make) measured in the same run, and one issuance alone.

    .venv/bin/python bench/bench_cert_issuance.py [--pods 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.figures import figure  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _body(stream: str) -> bytes:
    from auditlock.ledger.keys import generate, raw_public

    public = base64.b64encode(raw_public(generate().public_key())).decode()
    return json.dumps({"public_key": public, "stream": stream}).encode()


def _burst_in_child(url: str, ca_path: str, asks: list[tuple[str, bytes]]) -> list[float]:
    """The clients run in a process of their own, as the pods do: in the operator's
    process their TLS handshakes would hold its GIL."""
    return asyncio.run(_burst(url, ssl.create_default_context(cafile=ca_path), asks))


async def _burst(url: str, ca: ssl.SSLContext, asks: list[tuple[str, bytes]]) -> list[float]:
    """All requests released together, each on a fresh connection (a starting pod has no
    connection to reuse); latency of each in ms."""
    import aiohttp

    gate = asyncio.Event()

    async def one(token: str, body: bytes) -> float:
        connector = aiohttp.TCPConnector(ssl=ca, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            await gate.wait()
            began = time.perf_counter()
            async with session.post(
                url, data=body, headers={"Authorization": f"Bearer {token}"}
            ) as answer:
                text = await answer.text()
                if answer.status != 201:
                    raise SystemExit(f"issuance failed ({answer.status}): {text}")
            return (time.perf_counter() - began) * 1000

    tasks = [asyncio.create_task(one(token, body)) for token, body in asks]
    await asyncio.sleep(0.2)  # every session created and waiting
    gate.set()
    return list(await asyncio.gather(*tasks))


def bench(pods: int, rounds: int) -> None:
    from tests.helpers.certificates import collector_running, pod_token
    from tests.helpers.policies import create_pod, create_policy, file_spec, wait_condition
    from tests.servers.auditlock_operator import apply_crd, start_operator
    from tests.servers.kube_controlplane import KubeControlPlane

    from auditlock.ledger.keys import Signer, generate
    from auditlock.operator.certificates import PATH
    from auditlock.operator.kube import Kube
    from auditlock.operator.names import CERTIFICATE_AUDIENCE
    from auditlock.operator.stream_ids import stream_id

    workdir = Path(tempfile.mkdtemp(prefix="auditlock-bench-certs-"))
    with KubeControlPlane(workdir) as kube:
        apply_crd(kube)
        running = start_operator(
            kube, audit_intake=False, refresh_seconds=60, register=False, cluster="bench",
            root_key=Signer(generate()),
        )  # fmt: skip
        try:
            namespace = kube.create_namespace()
            create_policy(kube, namespace, "trail", file_spec(workdir / "trail"))
            wait_condition(kube, namespace, "trail", "Ready", "True", timeout=60)
            with ThreadPoolExecutor(8) as pool:
                made = list(pool.map(lambda _: create_pod(kube, namespace, {"app": "payments"}),
                                     range(pods)))  # fmt: skip
                tokens = list(pool.map(lambda p: pod_token(kube, p), made))
            streams = [stream_id("bench", namespace, p["metadata"]["name"]) for p in made]
            url, ca = running.webhook_url + PATH, str(kube.ca_path)
            clients = multiprocessing.get_context("spawn").Pool(1)

            # Floors: one TokenReview alone; one issuance alone (same token, new keys).
            with kube.api_client() as api:
                reviewer = Kube(api)
                reviews = []
                for _ in range(20):
                    began = time.perf_counter()
                    reviewer.review_token(tokens[0], CERTIFICATE_AUDIENCE)
                    reviews.append((time.perf_counter() - began) * 1000)
            review_ms = statistics.median(reviews)
            # One key per collector container: every new key below comes with a new
            # container id, as after a restart (set beforehand, not timed).
            alone = []
            for _ in range(10):
                collector_running(kube, made[0])
                ask = [(tokens[0], _body(streams[0]))]
                alone.append(clients.apply(_burst_in_child, (url, ca, ask))[0])
            alone_ms = statistics.median(alone)

            latencies: list[float] = []
            walls = []
            for _ in range(rounds):
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda p: collector_running(kube, p), made))
                asks = [(t, _body(s)) for t, s in zip(tokens, streams, strict=True)]
                began = time.perf_counter()
                latencies += clients.apply(_burst_in_child, (url, ca, asks))
                walls.append(time.perf_counter() - began - 0.2)
            clients.close()
        finally:
            running.stop()
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"floor: one TokenReview alone, median of 20: {review_ms:.1f} ms")
    print(f"one issuance alone (fresh TLS connection), median of 10: {alone_ms:.1f} ms")
    print(
        f"{pods} pods at once x {rounds} rounds ({len(latencies)} issuances, all 201): "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms; "
        f"a whole burst {statistics.median(walls):.2f} s (median)"
    )
    figure("certificate issuance alone", alone_ms, "ms", better="lower", floor=review_ms)
    figure(f"certificate issuance p50 ({pods} pods at once)", p50, "ms", better="lower",
           floor=review_ms)  # fmt: skip
    figure(f"certificate issuance p99 ({pods} pods at once)", p99, "ms", better="lower",
           target=1000, floor=review_ms)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    bench(args.pods, args.rounds)


if __name__ == "__main__":
    main()
