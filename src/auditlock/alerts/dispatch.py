"""Delivery that never blocks intake: a bounded queue and a worker per receiver.

`Dispatcher.submit` is synchronous and O(1) per transition: it is called from the
evaluation step on the intake path. Each receiver's worker takes what is queued (at most
BATCH at a time), sends it, and on failure retries the same batch with exponential
backoff (0.5 s doubling to MAX_BACKOFF) while new transitions queue behind it. A queue
that is full drops its oldest transitions (counted per receiver: a lost receiver costs
alerts, never audit events); `updated` resends are dropped first as they are only
refreshers. The trail receiver has its own queue like the others, so a slow Alertmanager
never delays the alert event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry

from auditlock.alerts.engine import Transition
from auditlock.alerts.receivers import Receiver, ReceiverError
from auditlock.metric_factory import MetricFactory

log = logging.getLogger("auditlock.alerts")

QUEUE_LIMIT = 1000
BATCH = 100
MAX_BACKOFF = 30.0


class DispatchMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        m = MetricFactory(registry, prefix)
        self.transitions = m.counter(
            "alerts",
            "Alert transitions raised, by change (fired, updated, resolved) and severity.",
            ["change", "severity"],
        )
        self.sent = m.counter(
            "alert_deliveries", "Alert transitions delivered, by receiver.", ["receiver"]
        )
        self.failures = m.counter(
            "alert_delivery_failures",
            "Failed delivery attempts (retried with backoff), by receiver.",
            ["receiver"],
        )
        self.dropped = m.counter(
            "alert_deliveries_dropped",
            "Alert transitions dropped because a receiver's queue was full, by receiver.",
            ["receiver"],
        )
        self.queued = m.gauge(
            "alert_queue", "Alert transitions waiting for a receiver.", ["receiver"]
        )


class _Lane:
    def __init__(self, receiver: Receiver, limit: int) -> None:
        self.receiver = receiver
        self.queue: deque[Transition] = deque()
        self.limit = limit
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Dispatcher:
    def __init__(
        self,
        receivers: Iterable[Receiver],
        metrics: DispatchMetrics,
        *,
        queue_limit: int = QUEUE_LIMIT,
        first_backoff: float = 0.5,
    ) -> None:
        self.metrics = metrics
        self.first_backoff = first_backoff
        self._lanes = [_Lane(r, queue_limit) for r in receivers]
        self._closing = False
        self._progress = asyncio.Event()

    def start(self) -> None:
        for lane in self._lanes:
            if lane.task is None:
                lane.task = asyncio.create_task(
                    self._run(lane), name=f"alerts-{lane.receiver.name}"
                )

    def submit(self, transitions: Sequence[Transition]) -> None:
        if not transitions:
            return
        for t in transitions:
            self.metrics.transitions.labels(t.change, t.alert.severity).inc()
        for lane in self._lanes:
            for t in transitions:
                if len(lane.queue) >= lane.limit and not self._make_room(lane):
                    self.metrics.dropped.labels(lane.receiver.name).inc()
                    continue
                lane.queue.append(t)
            self.metrics.queued.labels(lane.receiver.name).set(len(lane.queue))
            lane.wake.set()

    def _make_room(self, lane: _Lane) -> bool:
        for index, queued in enumerate(lane.queue):
            if queued.change == "updated":
                del lane.queue[index]
                self.metrics.dropped.labels(lane.receiver.name).inc()
                return True
        lane.queue.popleft()
        self.metrics.dropped.labels(lane.receiver.name).inc()
        return True

    async def _run(self, lane: _Lane) -> None:
        name = lane.receiver.name
        while True:
            while not lane.queue:
                if self._closing:
                    return
                lane.wake.clear()
                await lane.wake.wait()
            batch = [lane.queue[i] for i in range(min(BATCH, len(lane.queue)))]
            delay = self.first_backoff
            while True:
                try:
                    await lane.receiver.send(batch)
                    break
                except ReceiverError as exc:
                    self.metrics.failures.labels(name).inc()
                    log.warning(
                        "alert delivery to %s failed (retry in %.1fs): %s", name, delay, exc
                    )
                except Exception:
                    self.metrics.failures.labels(name).inc()
                    log.exception("alert delivery to %s failed (retry in %.1fs)", name, delay)
                if self._closing:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            # The batch is the queue's head unless a full queue dropped some of it.
            for sent in batch:
                if lane.queue and lane.queue[0] is sent:
                    lane.queue.popleft()
            self.metrics.sent.labels(name).inc(len(batch))
            self.metrics.queued.labels(name).set(len(lane.queue))
            self._progress.set()

    async def drain(self) -> None:
        """Return once every queue is empty (callers bound it with asyncio.timeout)."""
        while any(lane.queue for lane in self._lanes):
            self._progress.clear()
            await self._progress.wait()

    async def shutdown(self, drain_seconds: float = 5.0) -> None:
        """Deliver what is queued for at most `drain_seconds`, then close."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                await self.drain()
        await self.close()

    async def close(self) -> None:
        self._closing = True
        for lane in self._lanes:
            lane.wake.set()
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            await lane.receiver.close()
