"""The operator's witness cycle on a real file:// destination (operator/witness.py):
records name only what changed, two replicas witnessing one destination never fork the
chain (the store refuses a taken seq; the loser reads the chain again), an unreachable
destination is counted and retried, and what they stored verifies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from auditlock import sinks
from auditlock.ledger.abandon import abandon_stream
from auditlock.ledger.keys import Signer, generate
from auditlock.ledger.newest import StreamTip, newest_checkpoints
from auditlock.ledger.synth import synthesize, synthetic_events
from auditlock.ledger.verify import VerifyOptions, verify
from auditlock.ledger.witness import decode_record
from auditlock.ledger.writer import StreamWriter
from auditlock.operator.registry import PolicyEntry, PolicyRegistry
from auditlock.operator.witness import Witness, WitnessMetrics, WitnessSettings
from auditlock.policy import parse_spec
from tests.helpers.policies import file_spec


def _registry(*paths: Path) -> PolicyRegistry:
    registry = PolicyRegistry()
    for i, path in enumerate(paths):
        spec = parse_spec(file_spec(path))
        registry.put(PolicyEntry("shop", f"p{i}", f"u{i}", 1, spec, "h", "2026-01-01T00:00:00Z"))
    return registry


def _witness(
    registry: PolicyRegistry, signer: Signer, interval: float = 1.0
) -> tuple[Witness, CollectorRegistry]:
    metrics = CollectorRegistry()
    witness = Witness(WitnessSettings(interval), registry, "c1", signer, WitnessMetrics(metrics))
    return witness, metrics


def _records(store: sinks.Destination) -> list[bytes]:
    return [store.get(n) for n in store.list("witness/c1/") if n.endswith(".json")]


def test_replicas_share_one_chain_and_records_name_what_changed(tmp_path: Path) -> None:
    """Two replicas on one destination: the one that loses a seq follows the other's
    records and writes none while they keep coming, then takes over when they stop."""
    store = sinks.open(f"file://{tmp_path / 'trail'}", fsync=False)
    writer = Signer(generate())
    synthesize(store, writer, streams=3, events=5)
    signer = Signer(generate())
    registry = _registry(tmp_path / "trail")
    interval = 0.1  # takeover after 0.15 s of silence
    first, first_metrics = _witness(registry, signer, interval)
    second, _ = _witness(registry, signer, interval)

    async def run() -> None:
        await first.cycle()  # seq 0: all three streams
        await first.cycle()  # seq 1: nothing changed
        await second.cycle()  # reads the chain: seq 2, all three (it starts afresh)
        await first.cycle()  # seq 2 is taken: lost-race; it now follows the other
        await first.cycle()  # reads seq 2: the other is witnessing, nothing stored
        await second.cycle()  # seq 3: nothing changed
        await asyncio.sleep(0.2)
        await first.cycle()  # reads seq 3: still the other's turn
        await asyncio.sleep(0.2)
        await first.cycle()  # silence for 1.5 intervals: takes over, seq 4, all three
        await first.close()
        await second.close()

    asyncio.run(run())
    named = [len(decode_record(data).record.streams) for data in _records(store)]
    assert named == [3, 0, 3, 0, 3]
    assert (
        first_metrics.get_sample_value(
            "auditlock_operator_witness_failures_total", {"reason": "lost-race"}
        )
        == 1
    )
    report = verify(store, VerifyOptions(public_keys=[writer.public], witness_keys=[signer.public]))
    assert report.findings == [], [f.describe() for f in report.findings]


def test_an_unreachable_destination_is_counted_and_the_others_still_witnessed(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good"
    synthesize(sinks.open(f"file://{good}", fsync=False), Signer(generate()), streams=1, events=2)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the destination's directory should be")
    witness, metrics = _witness(_registry(blocked, good), Signer(generate()))
    started = time.monotonic()
    stored = asyncio.run(witness.cycle())
    assert [o.url for o in stored] == [f"file://{good}"]
    assert (
        metrics.get_sample_value(
            "auditlock_operator_witness_failures_total", {"reason": "destination"}
        )
        == 1
    )
    assert time.monotonic() - started < 10


def test_the_refresh_decides_on_the_witness_reading(tmp_path: Path) -> None:
    """One reading per destination: the periodic refresh (LAST-CHECKPOINT, closing the
    streams of pods gone for good) takes the witness's reading while it is recent, rather
    than listing the bucket again."""
    import shutil

    from auditlock.operator.destination import inspect

    trail = tmp_path / "trail"
    synthesize(sinks.open(f"file://{trail}", fsync=False), Signer(generate()), streams=2, events=2)
    registry = _registry(trail)
    witness, _ = _witness(registry, Signer(generate()))
    asyncio.run(witness.cycle())
    shutil.rmtree(trail / "streams" / "synth-0-0001")  # after the witness read it
    spec = registry.in_namespace("shop")[0].spec
    state = inspect(spec, {}, None, max_age=300)
    assert state.tips is not None and sorted(state.tips) == ["synth-0-0000", "synth-0-0001"]
    fresh = inspect(spec, {}, None, max_age=0)  # an old reading is read again
    assert fresh.tips is not None and sorted(fresh.tips) == ["synth-0-0000"]


def test_a_stream_deleted_or_rolled_back_is_said_at_the_next_cycle(tmp_path: Path) -> None:
    """Not only verify: the witness itself says at once that a stream it named is gone or
    behind (an unlocked bucket), once each."""
    import shutil

    trail = tmp_path / "trail"
    store = sinks.open(f"file://{trail}", fsync=False)
    synthesize(store, Signer(generate()), streams=2, events=2)
    witness, metrics = _witness(_registry(trail), Signer(generate()))

    def lost(kind: str) -> float | None:
        return metrics.get_sample_value(
            "auditlock_operator_witness_streams_lost_total", {"kind": kind}
        )

    asyncio.run(witness.cycle())
    shutil.rmtree(trail / "streams" / "synth-0-0000")
    (newest,) = sorted((trail / "streams" / "synth-0-0001").glob("*/ckpt-*.ckpt"))[-1:]
    newest.chmod(0o644)
    newest.unlink()
    asyncio.run(witness.cycle())
    asyncio.run(witness.cycle())
    assert (lost("deleted"), lost("rolled-back")) == (1, 1)


def test_a_stream_closed_in_a_cycle_is_named_by_that_cycles_record(tmp_path: Path) -> None:
    """The witness closes abandoned streams off its own reading (the operator's closer,
    reconcile.close_abandoned_in), then names each closed stream's `abandon` checkpoint
    in the record of the same cycle, and never again."""
    store = sinks.open(f"file://{tmp_path / 'trail'}", fsync=False)
    writer_key = Signer(generate())
    writer = StreamWriter.resume(store, "c1_shop_gone", writer_key, retention=None)
    for _, event in synthetic_events("c1_shop_gone", 3, start_ns=time.time_ns()):
        writer.append(event)
    writer.store(writer.seal())
    signer = Signer(generate())
    witness, _ = _witness(_registry(tmp_path / "trail"), signer)
    asked: list[str] = []

    async def close(url: str, tips: dict[str, StreamTip]) -> list[str]:
        asked.append(url)
        if len(asked) != 2:  # the pod is gone for good from the second cycle on
            return []
        tip = tips["c1_shop_gone"]
        result = abandon_stream(store, tip.stream, writer_key, now_ns=time.time_ns(),
                                retention=None, expect=tip.name)  # fmt: skip
        assert result.outcome == "abandoned", result.message
        return [tip.stream]

    witness.close_abandoned = close

    async def run() -> None:
        for _ in range(3):
            await witness.cycle()
        await witness.close()

    asyncio.run(run())
    assert asked == [store.url] * 3
    named = [
        [(e.stream, e.index) for e in decode_record(d).record.streams] for d in _records(store)
    ]
    abandon = newest_checkpoints(store)["c1_shop_gone"]
    assert abandon.signed is not None and abandon.signed.checkpoint.kind == "abandon"
    assert named == [[("c1_shop_gone", abandon.index - 1)], [("c1_shop_gone", abandon.index)], []]
    report = verify(store, VerifyOptions(public_keys=[writer_key.public],
                                         witness_keys=[signer.public]))  # fmt: skip
    assert report.findings == [], [f.describe() for f in report.findings]
    assert [s.stream for s in report.streams if s.abandoned] == ["c1_shop_gone"]
