"""Shipping: spool records → ledger segments and checkpoints → destination, then release.

    spool reader ──> StreamWriter.append (seq, hash chain) ──> seal (segments + checkpoint)
        ──> store in a worker thread (≤ uploads_in_flight at once, retried with backoff)
        ──> release spool records once a stored checkpoint covers all their events

A batch is sealed when it holds `batch_max_events` events, or when its oldest event has
waited `max_delay_seconds` and no earlier batch is still being stored (group commit: a
slow store makes the next batch larger instead of queueing small ones behind it, whose
writes and fsyncs would then back up); a due batch waits at most STORE_WAIT delays more
for that store. When no events flow, the writer's heartbeat checkpoint keeps the
stream's tail provable (docs/architecture.md: at least one checkpoint a minute).

Release is driven by checkpoints, which the writer stores strictly in order: each record
remembers the writer's `next_seq` after its last event, and is released once a stored
checkpoint's tree covers that many events. So a released record is always provable from
the destination alone, whatever order the segment uploads finished in.

Restart after a crash: the spool's state says where its released records end in the
ledger (`next_seq` of `epoch`). `StreamWriter.resume` reads the destination and says
which seq it needs next; the events in between were stored before the crash but not yet
released, so exactly that many spooled events are skipped and every spooled event is in
the ledger once. Re-fed events rebuild byte-identical segments (idempotent puts). If the
writer had to start a new epoch (the old one was closed or its tail is unusable), nothing
of the unreleased records is in it yet, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from auditlock.sidecar.config import SidecarConfig
from auditlock.sidecar.metrics import Metrics
from auditlock.sidecar.pod_key import CertificateRefused, PodKey
from auditlock.sidecar.spool.spool import Spool

log = logging.getLogger("auditlock.sidecar.shipping")

# A due batch is sealed at once while fewer batches than this are being stored; else it
# waits for one of them to be stored, at most STORE_WAIT `max_delay_seconds` more.
PIPELINED_STORES = 2
STORE_WAIT = 4


class Shipper:
    def __init__(self, config: SidecarConfig, spool: Spool, metrics: Metrics) -> None:
        self.config = config
        self.delivery = config.delivery
        self.spool = spool
        self.metrics = metrics
        metrics.heartbeat.set(self.delivery.heartbeat_seconds)
        self.writer: Any = None
        self.destination: Any = None
        self.epoch = 0
        # (record number, writer.next_seq after its events), oldest first, not yet released
        self._records: deque[tuple[int, int]] = deque()
        self._stored_tree = 0  # events covered by the newest stored checkpoint
        self._slots = asyncio.Semaphore(self.delivery.uploads_in_flight)
        self._executor = ThreadPoolExecutor(
            max_workers=self.delivery.uploads_in_flight + 1, thread_name_prefix="upload"
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._stored = asyncio.Event()  # set when a store ends (stored or given up)
        self.pod_key: PodKey | None = None
        stream = config.stream
        if stream.certificate_url:
            self.pod_key = PodKey(
                stream.certificate_url,
                stream.id,
                stream.certificate_token_file,
                stream.certificate_ca_file,
                stream.certificate_ca,
            )
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._skip = 0
        self.resumed = False
        self.problem: str | None = None  # last persistent upload failure, for /readyz
        self.failed: str | None = None  # the shipping loop died (see _runner_done)

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """Destination I/O runs on the shipper's own threads: uploads stuck on a dead
        destination must never starve the spool's fsyncs (asyncio's default executor)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # --- start ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the destination and resume the stream (blocking I/O, in a thread).

        A destination that is unreachable right now (TransientError) does not stop the
        sidecar: intake starts anyway (events wait in the spool) and shipping keeps
        trying to resume in the background. Anything else (a bad key file, a malformed
        URL, a spool that does not fit the stream) fails the start with its message.
        """
        from auditlock.sinks.base import TransientError

        try:
            await self._in_thread(self._open)
        except TransientError as exc:
            self._not_yet(exc)
            log.warning("cannot resume the stream yet (%s); intake runs, shipping retries", exc)
            self._runner = asyncio.create_task(self._resume_later())
            self._runner.add_done_callback(self._runner_done)
            return
        self._resumed()

    def _not_yet(self, exc: Exception) -> None:
        """Why shipping has not started: no certificate yet (the destination is fine), or
        the destination (which counts as its failure)."""
        if isinstance(exc, CertificateRefused):
            self.problem = f"certificate not issued yet, retrying: {exc}"
            return
        self.problem = f"destination unreachable, retrying: {exc}"
        self.metrics.destination_failed()

    async def _resume_later(self) -> None:
        from auditlock.sinks.base import TransientError

        delay = self.delivery.retry_initial_seconds
        while not self._stopping:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.delivery.retry_max_seconds)
            try:
                await self._in_thread(self._open)
            except TransientError as exc:
                before = self.problem
                self._not_yet(exc)
                if self.problem != before:
                    log.warning("%s", self.problem)
                continue
            self.problem = None
            self.metrics.destination_worked()
            log.info("destination reachable again: stream resumed")
            await self._run_after_resume()
            return

    async def _run_after_resume(self) -> None:
        self._resumed(start_runner=False)
        await self._run()

    def _resumed(self, start_runner: bool = True) -> None:
        writer = self.writer
        self.epoch = int(writer.epoch)
        next_seq = int(writer.next_seq)
        if self.spool.released_next_seq is None:
            # A fresh spool: nothing of it is in the ledger, wherever the stream stands.
            self.spool.join_stream(next_seq, self.epoch)
        elif self.spool.released_epoch == self.epoch:
            self._skip = next_seq - self.spool.released_next_seq
            if self._skip < 0:
                raise RuntimeError(
                    f"stream {self.config.stream.id!r} on the destination ends at seq "
                    f"{next_seq - 1} but this spool already released events up to seq "
                    f"{self.spool.released_next_seq - 1}: ledger objects are missing from "
                    "the destination, or the spool belongs to another stream"
                )
        if self._skip:
            log.info(
                "resume: %d spooled event(s) after record %d were stored before the restart "
                "(seq %d..%d); not storing them again",
                self._skip,
                self.spool.released,
                next_seq - self._skip,
                next_seq - 1,
            )
        self.metrics.last_seq.set(next_seq - 1)
        self.resumed = True
        if self.pod_key is not None and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_certificate(self.pod_key))
        if start_runner:
            self._runner = asyncio.create_task(self._run())
            self._runner.add_done_callback(self._runner_done)

    async def _renew_certificate(self, pod_key: PodKey) -> None:
        """A new certificate for the same key at two thirds of the current one's
        validity, retried with backoff until it is stored; a key whose certificate ran
        out signs checkpoints `verify` reports as `uncertified-key`, so say so loudly."""
        delay = self.delivery.retry_initial_seconds
        while not self._stopping:
            wait = (pod_key.renew_at_ns() - time.time_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(min(wait, 3600.0))
                continue
            try:
                await self._in_thread(self._certify, pod_key)
            except CertificateRefused as exc:
                expired = time.time_ns() > pod_key.not_after_ns
                self.problem = f"certificate {'expired' if expired else 'not renewed'}: {exc}"
                log.warning("%s; retrying in %.0f s", self.problem, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.delivery.retry_max_seconds)
                continue
            self.problem = None
            delay = self.delivery.retry_initial_seconds

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bug or a ledger limit: intake keeps spooling (nothing acknowledged is lost)
        # but nothing ships, so say so loudly and turn /readyz red.
        self.failed = f"shipping stopped: {task.exception()!r}"
        log.error(
            "%s; events stay in the spool until a restart", self.failed, exc_info=task.exception()
        )

    def _certify(self, pod_key: PodKey) -> None:
        """Blocking: ask the operator, counting the outcome (CertificateRefused says why)."""
        try:
            pod_key.certify()
        except CertificateRefused:
            self.metrics.certificate_requests.labels("refused").inc()
            raise
        self.metrics.certificate_requests.labels("certified").inc()

    def _open(self) -> None:
        from auditlock import sinks
        from auditlock.ledger.keys import load_private_key
        from auditlock.ledger.writer import StreamWriter
        from auditlock.sinks.base import LockMode, RetentionSpec

        dest = self.config.destination
        if self.pod_key is not None:
            # The certificate must be stored before the first checkpoint the key signs.
            if not self.pod_key.certified:
                self._certify(self.pod_key)
            key = self.pod_key.signer.private
        else:
            assert self.config.stream.signing_key_file is not None  # config.py checks
            key = load_private_key(self.config.stream.signing_key_file)
        self.destination = sinks.open(dest.url, **dest.options)
        retention = RetentionSpec(
            period=timedelta(days=dest.retention_days),
            mode=LockMode(dest.lock_mode),
            legal_hold=dest.legal_hold,
        )
        self.writer = StreamWriter.resume(
            self.destination,
            self.config.stream.id,
            key,
            retention=retention,
            heartbeat_seconds=self.delivery.heartbeat_seconds,
        )

    # --- the loop -----------------------------------------------------------------

    async def _run(self) -> None:
        reader = self.spool.reader(self.spool.released)
        writer = self.writer
        extend = writer.extend_canonical  # the spool holds canonical event bytes
        batch_max = self.delivery.batch_max_events
        max_delay = self.delivery.max_delay_seconds
        wait_for_store = STORE_WAIT * max_delay
        deadline: float | None = None
        try:
            while True:
                pending = writer.pending_events
                records = reader.read(batch_max - pending) if pending < batch_max else []
                for record in records:
                    if record.gap_before and self._skip:
                        self._skip_across_gap(record)
                    events = record.events
                    if self._skip:
                        skipped = min(self._skip, len(events))
                        self._skip -= skipped
                        events = events[skipped:]
                    extend(events)
                    self._records.append((record.number, writer.next_seq))
                pending = writer.pending_events
                if pending and deadline is None:
                    deadline = time.monotonic() + max_delay
                caught_up = reader.position >= self.spool.committed
                now = time.monotonic()
                due = deadline is not None and now >= deadline
                late = deadline is not None and now >= deadline + wait_for_store
                # A batch that is due waits for the batch being stored (group commit),
                # up to STORE_WAIT delays: sealing it now would queue its writes behind
                # that store's, and small batches would then back up (module doc).
                storing = len(self._tasks) >= PIPELINED_STORES
                if pending and (
                    pending >= batch_max
                    or (due and (not storing or late))
                    or (self._stopping and caught_up)
                ):
                    await self._launch(writer.seal())
                    deadline = None
                    due = False
                elif not pending and writer.heartbeat_due():
                    await self._launch(writer.heartbeat())
                if self._stopping and caught_up and not writer.pending_events:
                    return
                if records:
                    await asyncio.sleep(0)  # let intake run between chunks of work
                    continue
                if not caught_up:
                    # A durable record the reader could not read yet: back off briefly.
                    await asyncio.sleep(0.05)
                    continue
                if due and deadline is not None:
                    # Wait for the store in flight (its end sets `_stored`), then seal.
                    self._stored.clear()
                    with contextlib.suppress(TimeoutError):
                        limit = deadline + wait_for_store - time.monotonic()
                        await asyncio.wait_for(self._stored.wait(), max(0.0, limit))
                    continue
                wait = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
                await self.spool.wait_committed(reader.position, min(wait, 1.0))
        finally:
            reader.close()

    def _skip_across_gap(self, record: Any) -> None:
        # Records lost to spool damage lie between the stored events and this record, and
        # how many of their events were stored is unknown: store everything from here on
        # (an event may then be in the ledger twice; none is lost).
        log.warning(
            "resume: %d record(s) before spool record %d were lost; the %d spooled event(s) "
            "still to skip may include some of theirs, so none is skipped (an event stored "
            "before the restart may be stored twice)",
            record.gap_before,
            record.number,
            self._skip,
        )
        self._skip = 0

    async def _launch(self, objects: list[Any]) -> None:
        if not objects:
            return
        await self._slots.acquire()  # at most uploads_in_flight; reading waits when full
        task = asyncio.create_task(self._upload(objects))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upload(self, objects: list[Any]) -> None:
        delay = self.delivery.retry_initial_seconds
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._in_thread(self.writer.store, objects)
                except Exception as exc:
                    self.metrics.uploads.labels("error").inc()
                    self.metrics.destination_failed()
                    self.problem = f"upload failed, retrying: {exc}"
                    log.warning(
                        "storing %s failed (%s); retry in %.1fs", objects[-1].name, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.delivery.retry_max_seconds)
                    continue
                break
            self.problem = None
            self.metrics.destination_worked()
            self.metrics.uploads.labels("ok").inc()
            self.metrics.upload_seconds.observe(time.monotonic() - started)
            self.metrics.bytes_out.inc(sum(len(o.data) for o in objects))
            for obj in objects:
                if obj.kind == "checkpoint" and obj.epoch == self.epoch:
                    covered = 0 if obj.last_seq is None else obj.last_seq + 1
                    self._stored_tree = max(self._stored_tree, covered)
                    self.metrics.last_checkpoint_monotonic = time.monotonic()
            self._release_covered()
        finally:
            self._slots.release()
            self._stored.set()

    def _release_covered(self) -> None:
        last: tuple[int, int] | None = None
        shipped = 0
        while self._records and self._records[0][1] <= self._stored_tree:
            previous = last[1] if last else self.spool.released_next_seq or 0
            last = self._records.popleft()
            shipped += max(0, last[1] - previous)
        if last is not None:
            self.spool.release(last[0], last[1], self.epoch)
            self.metrics.events_out.inc(shipped)
            self.metrics.last_seq.set(last[1] - 1)

    # --- stop ---------------------------------------------------------------------

    async def drain_and_close(self) -> None:
        """Ship everything spooled, then store the stream-closed checkpoint."""
        self._stopping = True
        if self._renewer is not None:
            self._renewer.cancel()
        if self._runner is not None:
            if not self.resumed:
                # Never reached the destination: nothing to drain, the spool keeps it all.
                self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if not self.resumed:
            log.warning("stopping without reaching the destination; events stay in the spool")
            return
        if self.failed:
            raise RuntimeError(self.failed)
        await self._wait_uploads()
        if self.writer is not None and not self.writer.closed:
            await self._launch(self.writer.close())
            await self._wait_uploads()
        if self.destination is not None:
            await self._in_thread(self.destination.close)
        self._executor.shutdown(wait=False)

    async def _wait_uploads(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def abort(self) -> None:
        """Stop without draining (the grace period ran out); the spool keeps everything."""
        for task in [self._runner, self._renewer, *self._tasks]:
            if task is not None:
                task.cancel()

    def refresh_metrics(self) -> None:
        oldest = self.spool.oldest_unreleased_ns
        self.metrics.upload_lag.set(0 if oldest is None else (time.time_ns() - oldest) / 1e9)
        self.metrics.spool_bytes.set(self.spool.bytes_used)
        self.metrics.spool_fill.set(self.spool.fill_ratio)
