"""Synthetic ledgers for trying `verify` and for benchmarks (`auditlock synth`).

Deterministic for a given seed and start time: events, their times and the checkpoint
times come from a simulated clock (one event every `interval`), so two runs write the same
bytes. Every stream ends with a close checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from auditlock.ledger.keys import Signer
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.writer import StreamWriter
from auditlock.sinks.base import Destination, RetentionSpec

DEFAULT_START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

_ACTIONS = [
    ("access", "get", "secrets"),
    ("access", "exec", "pods"),
    ("authorization", "update", "rolebindings"),
    ("data", "delete", "orders"),
    ("configuration", "patch", "configmaps"),
    ("alert", "error", "pods"),
]


def synthetic_events(
    stream: str, count: int, *, seed: int = 0, start_ns: int = DEFAULT_START_NS,
    interval_ns: int = 10_000_000,
) -> Iterator[tuple[int, dict[str, Any]]]:  # fmt: skip
    """(time ns, normalized event) pairs, about 300 bytes each in canonical form."""
    rng = random.Random(f"{seed}:{stream}")
    for i in range(count):
        when = start_ns + i * interval_ns
        category, action, resource = _ACTIONS[rng.randrange(len(_ACTIONS))]
        user = f"user{rng.randrange(1000):03d}@example.com"
        yield (
            when,
            {
                "id": f"{stream}-{i:010d}",
                "time": format_ns(when),
                "category": category,
                "action": action,
                "outcome": "success" if rng.random() < 0.9 else "failure",
                "actor": {
                    "kind": "user",
                    "name": user,
                    "ip": f"10.0.{rng.randrange(256)}.{i % 256}",
                },
                "target": {
                    "resource": resource,
                    "namespace": "shop",
                    "name": f"obj-{rng.randrange(10**6)}",
                },
                "source": {
                    "cluster": "demo",
                    "namespace": "shop",
                    "pod": stream,
                    "container": "app",
                },
                "correlation": {"request_id": f"req-{rng.getrandbits(48):012x}"},
            },
        )


@dataclass
class SynthStats:
    streams: int = 0
    events: int = 0
    objects: int = 0
    bytes: int = 0


def synthesize(
    destination: Destination,
    signer: Signer,
    *,
    streams: int,
    events: int,
    seed: int = 0,
    segment_events: int = 1000,
    start_ns: int = DEFAULT_START_NS,
    interval_ns: int = 10_000_000,
    heartbeat_seconds: float = 60.0,
    retention: RetentionSpec | None = None,
    compress: bool = False,
) -> SynthStats:
    """Write `streams` streams of `events` events each; return what was written."""
    stats = SynthStats()
    for k in range(streams):
        stream = f"synth-{seed}-{k:04d}"
        clock = SimulatedClock(start_ns)
        writer = StreamWriter.resume(
            destination, stream, signer, retention=retention,
            heartbeat_seconds=heartbeat_seconds, clock=clock, compress=compress,
        )  # fmt: skip
        # Events are handed to the writer in batches (one encoder call each), flushed
        # before anything that reads the writer's state: a heartbeat or a seal.
        batch: list[dict[str, Any]] = []
        for when, event in synthetic_events(
            stream, events, seed=seed, start_ns=start_ns, interval_ns=interval_ns
        ):
            if writer.heartbeat_due(when):
                writer.extend(batch)
                batch = []
                _heartbeats_until(writer, clock, when, stats)
            clock.now = when
            batch.append(event)
            if writer.pending_events + len(batch) >= segment_events:
                writer.extend(batch)
                batch = []
                _store(writer, writer.seal(), stats)
        writer.extend(batch)
        end = clock.now + interval_ns
        _heartbeats_until(writer, clock, end, stats)
        clock.now = end
        _store(writer, writer.close(), stats)
        stats.streams += 1
        stats.events += events
    return stats


def _heartbeats_until(
    writer: StreamWriter, clock: SimulatedClock, when: int, stats: SynthStats
) -> None:
    """The heartbeats a live writer would have written before `when`, each when it fell due."""
    while writer.heartbeat_due(when):
        due = writer.last_checkpoint_ns + writer.heartbeat_ms * 1_000_000
        clock.now = min(max(due, clock.now), when)
        _store(writer, writer.heartbeat(), stats)


class SimulatedClock:
    """A clock for StreamWriter that only moves when told (ns since the Unix epoch)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _store(writer: StreamWriter, objects: list[Any], stats: SynthStats) -> None:
    writer.store(objects)
    stats.objects += len(objects)
    stats.bytes += sum(len(o.data) for o in objects)
