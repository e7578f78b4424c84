"""Real-time alerts: latency, cost and the silent-stream bound (docs/alerts.md).

    .venv/bin/python bench/bench_alerts.py [latency|cost|silent|all]
        [--seconds 10] [--rate 10000] [--events 60000] [--heartbeat 5] [--watch 5]

latency  A real collector process with 20 alert rules (19 that every event is evaluated
         against and never matches, one that matches probe events) carries --rate
         events/s over HTTP (200-event requests) for --seconds; every 100 ms one event of
         a request is a probe with a unique id. A real Alertmanager (Debian's
         prometheus-alertmanager, grouping by the probe's label, group_wait 0s) notifies
         a webhook receiver in this process. Prints p50/p99/max of probe sent → alert
         notified by Alertmanager (an upper bound of "received by Alertmanager": it adds
         Alertmanager's own dispatch). Target: p99 <= 1 s.
cost     The same load (--events events at --rate/s) through a collector without rules
         and one with the 20 rules, alternating, twice each; events per CPU-second of the
         collector process (from before the first request until every event is stored).
         Prints both and their ratio. Target: the 20 rules cost at most 10 %: ratio >= 0.9.
silent   A collector writing a policy's stream with a --heartbeat s heartbeat is killed
         with SIGKILL; the operator's trail watcher (operator/alerting.py, reading the
         destination every --watch s) raises AuditlockStreamSilent at the real
         Alertmanager. Prints killed → notified against 2 x heartbeat + 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

from tests.servers.alertmanager import Alertmanager
from tests.servers.sidecar import SidecarProcess, make_config

from auditlock.alerts.model import parse_rule_spec, plain_spec
from bench.figures import figure

BATCH = 200
PROBE_EVERY = 0.1


def rules_file(path: Path, alertmanager_url: str | None) -> None:
    rules: list[dict[str, Any]] = []
    for i in range(19):
        spec = {
            "summary": f"never {i}",
            "match": [
                {"field": "category", "equals": "data"},
                {"field": "action", "equals": f"never-{i}"},
                {"field": "actor.name", "glob": "robot-*"},
            ],
            "groupBy": ["actor.name"],
        }
        rules.append({"name": f"never-{i}", "namespace": "shop", "spec": spec})
    probe = {
        "summary": "probe {{ details.probe }}",
        "match": [
            {"field": "category", "equals": "data"},
            {"field": "action", "equals": "probe"},
        ],
        "groupBy": ["details.probe"],
    }
    rules.append({"name": "probe", "namespace": "shop", "spec": probe})
    for rule in rules:
        rule["spec"] = plain_spec(parse_rule_spec(rule["spec"]))
    path.write_text(json.dumps({"rules": rules, "alertmanager_url": alertmanager_url}))


def event(n: int, probe: int | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "category": "data",
        "action": "read" if probe is None else "probe",
        "outcome": "success",
        "actor": {"kind": "user", "name": f"user-{n % 50}"},
        "target": {"resource": "orders", "name": f"order-{n}"},
    }
    if probe is not None:
        record["details"] = {"probe": str(probe)}
    return record


class Load:
    """Sends `rate` events/s in BATCH-event requests over CONNECTIONS keep-alive
    connections (the intake answers each request once it is fsynced, so one connection
    alone cannot carry the rate)."""

    CONNECTIONS = 16

    def __init__(self, port: int, rate: int, total: int, probes: bool) -> None:
        self.port = port
        self.rate = rate
        self.total = total
        self.probes = probes
        self.sent_probes: dict[int, float] = {}
        self.acked_probes: dict[int, float] = {}  # when the intake answered 202
        self.sent = 0
        self.errors = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        share = self.total // self.CONNECTIONS
        threads = [
            threading.Thread(target=self._send, args=(i, share), daemon=True)
            for i in range(self.CONNECTIONS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _send(self, index: int, total: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        interval = BATCH * self.CONNECTIONS / self.rate
        start = time.monotonic() + index * interval / self.CONNECTIONS
        next_probe = start
        probe = index * 1_000_000
        sent = 0
        batch_no = 0
        # One body for every plain request (the collector gives each event its own id):
        # the client's own CPU stays small beside the collector's on a shared machine.
        plain = json.dumps([event(index * total + i) for i in range(BATCH)]).encode()
        while sent < total:
            delay = start + batch_no * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            count = min(BATCH, total - sent)
            body = plain
            now = time.monotonic()
            if self.probes and index == 0 and now >= next_probe:
                probe += 1
                batch = [event(index * total + sent + i) for i in range(count - 1)]
                batch.append(event(index * total + sent, probe))
                body = json.dumps(batch).encode()
                with self._lock:
                    self.sent_probes[probe] = now
                next_probe += PROBE_EVERY
            elif count < BATCH:
                body = json.dumps([event(index * total + sent + i) for i in range(count)]).encode()
            connection.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            if body is not plain and self.probes and index == 0 and probe in self.sent_probes:
                with self._lock:
                    self.acked_probes.setdefault(probe, time.monotonic())
            with self._lock:
                if answer.status != 202:
                    self.errors += 1
                self.sent += count
            sent += count
            batch_no += 1


def collector(workdir: Path, rules: Path | None) -> SidecarProcess:
    sections: dict[str, Any] = {}
    if rules is not None:
        sections["alerts"] = {"rules_file": str(rules), "reload_seconds": 60.0}
    config = make_config(workdir, ports=True, **sections)
    process = SidecarProcess(workdir, config)
    process.start()
    return process


def bench_latency(args: argparse.Namespace, am: Alertmanager, root: Path) -> None:
    rules = root / "latency-rules.json"
    rules_file(rules, am.url)
    with am.routed(group_by=["details_probe"], group_wait="0s"):
        process = collector(root / "latency", rules)
        try:
            load = Load(process.http_port, args.rate, args.rate * args.seconds, probes=True)
            started = time.monotonic()
            load.run()
            elapsed = time.monotonic() - started
            deadline = time.monotonic() + 10
            notified: dict[int, float] = {}
            while time.monotonic() < deadline and len(notified) < len(load.sent_probes):
                for note in am.receiver.notifications:
                    for alert in note.alerts:
                        label = alert["labels"].get("details_probe")
                        if label and alert.get("status") == "firing":
                            notified.setdefault(int(label), note.received_at)
                time.sleep(0.1)
        finally:
            process.terminate()
    latencies = sorted(notified[p] - t for p, t in load.sent_probes.items() if p in notified)
    missing = len(load.sent_probes) - len(latencies)
    rate = load.sent / elapsed
    print(f"latency: {load.sent} events in {elapsed:.1f} s ({rate:,.0f}/s, {load.errors} "
          f"refused), {len(load.sent_probes)} probes, {missing} not notified")  # fmt: skip
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(f"  probe sent -> notified by Alertmanager: p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")  # fmt: skip
        acks = sorted(load.acked_probes[p] - t for p, t in load.sent_probes.items()
                      if p in load.acked_probes)  # fmt: skip
        after = sorted(notified[p] - load.acked_probes[p] for p in notified
                       if p in load.acked_probes)  # fmt: skip
        if acks and after:
            ack_ms, after_ms = statistics.median(acks) * 1000, statistics.median(after) * 1000
            print(f"  of which: intake answered 202 (fsynced) p50 {ack_ms:.0f} ms; "
                  f"202 -> notified p50 {after_ms:.0f} ms, max {after[-1]:.3f} s")  # fmt: skip
        figure("alert latency p99 (event -> Alertmanager) at load", round(p99, 3), "s",
               target=1.0, better="lower")  # fmt: skip
        figure("collector load during latency run", round(rate), "events/s",
               target=float(args.rate) * 0.95)  # fmt: skip


def _run_cost(root: Path, name: str, rules: Path | None, args: argparse.Namespace) -> float:
    process = collector(root / name, rules)
    try:
        before = process.cpu_seconds()
        load = Load(process.http_port, args.rate, args.events, probes=False)
        load.run()
        deadline = time.monotonic() + 60
        while process.metric("auditlock_sidecar_events_shipped_total") < load.sent:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: events not stored within 60 s")
            time.sleep(0.05)
        cpu = process.cpu_seconds() - before
    finally:
        process.terminate()
    per_cpu = float(load.sent / cpu)
    print(f"  {name}: {load.sent} events, {cpu:.2f} CPU-s, {per_cpu:,.0f} events/CPU-s")
    return per_cpu


def bench_cost(args: argparse.Namespace, root: Path) -> None:
    rules = root / "cost-rules.json"
    rules_file(rules, None)  # no receiver: the cost of evaluating, not of sending
    plain: list[float] = []
    ruled: list[float] = []
    print(f"cost: {args.events} events at {args.rate}/s, alternating")
    for run in range(2):
        plain.append(_run_cost(root, f"no-rules-{run}", None, args))
        ruled.append(_run_cost(root, f"20-rules-{run}", rules, args))
    base, with_rules = statistics.median(plain), statistics.median(ruled)
    print(f"  median: {base:,.0f} without rules, {with_rules:,.0f} with 20 rules "
          f"(ratio {with_rules / base:.3f})")  # fmt: skip
    figure("collector with 20 alert rules", round(with_rules), "events/CPU-s",
           floor=round(base), target_ratio=0.9)  # fmt: skip


def bench_silent(args: argparse.Namespace, am: Alertmanager, root: Path) -> None:
    from prometheus_client import CollectorRegistry

    from auditlock.operator.alerting import AlertSettings, OperatorAlerts
    from auditlock.operator.reconcile import entry_for
    from auditlock.operator.registry import PolicyRegistry

    store = root / "silent-store"
    body = {
        "metadata": {"namespace": "shop", "name": "p", "uid": "u", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"destination": {"file": {"path": str(store)}}, "retention": {"days": 1}},
    }  # fmt: skip
    policies = PolicyRegistry()
    policies.put(entry_for(body, cluster="bench"))
    config = make_config(
        root / "silent",
        f"file://{store}",
        ports=True,
        stream={"id": "bench_shop_api-1"},
        delivery={"heartbeat_seconds": float(args.heartbeat)},
    )
    process = SidecarProcess(root / "silent", config)
    process.start()
    settings = AlertSettings(
        alertmanager_url=am.url, watch_seconds=float(args.watch), tick_seconds=1
    )
    result: dict[str, float] = {}

    async def watch() -> None:
        alerts = OperatorAlerts(settings, policies, cluster="bench", metrics=CollectorRegistry())
        alerts.start()
        try:
            await asyncio.sleep(2 * args.heartbeat)  # healthy: no alert
            assert not alerts.states.firing(), "a healthy stream was alerted"
            process.kill()
            result["killed"] = time.monotonic()
            note = await asyncio.to_thread(
                am.receiver.wait_for_alert,
                "firing",
                4 * args.heartbeat + 2 * args.watch + 60,
                alertname="AuditlockStreamSilent",
                stream="bench_shop_api-1",
            )
            del note
            result["notified"] = time.monotonic()
        finally:
            await alerts.close()

    try:
        asyncio.run(watch())
    finally:
        process.kill()
    took = result["notified"] - result["killed"]
    bound = 2 * args.heartbeat + 30
    print(f"silent: heartbeat {args.heartbeat} s, watcher every {args.watch} s: SIGKILL -> "
          f"AuditlockStreamSilent notified in {took:.1f} s (bound 2 x heartbeat + 30 s = "
          f"{bound} s)")  # fmt: skip
    figure("SIGKILLed stream alerted after", round(took, 1), "s", target=bound, better="lower")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all",
                        choices=["latency", "cost", "silent", "all"])  # fmt: skip
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--heartbeat", type=int, default=5)
    parser.add_argument("--watch", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        root = Path(tmp)
        am = Alertmanager(root / "alertmanager")
        am.start()
        try:
            if args.what in ("latency", "all"):
                bench_latency(args, am, root)
            if args.what in ("cost", "all"):
                bench_cost(args, root)
            if args.what in ("silent", "all"):
                bench_silent(args, am, root)
        finally:
            am.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
