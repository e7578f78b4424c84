"""The operator's witness of every stream (docs/operator.md, "The witness"; the record is
docs/FORMAT.md section 16).

Every `interval_seconds` (60 by default) it reads, for each destination the operator's
policies name, the newest checkpoint of every stream there
(`operator.destination.read_newest`: the one reading, which the trail watcher makes too
and the periodic refresh reuses for LAST-CHECKPOINT), closes off that reading the
streams of pods gone for good (`close_abandoned`, operator/abandonment.py), and stores a
record of what it then saw in that destination, signed with the operator's key and
chained to the record before it. A record names the streams whose newest checkpoint
changed since this witness's previous record (all of them after a start or a takeover),
so a closed stream is named once: the record of the cycle that closed it names its
`abandon` checkpoint. With
a time-stamping authority (`tsa_url`), each record's bytes are timestamped first and the
token stored beside it, so nobody, the operator included, can later write a record that claims an
earlier time than the TSA saw.

`auditlock verify --witness-key` then reports a stream deleted or rolled back after it was
witnessed, and a copy of a bucket that differs from what was witnessed.

Several replicas may run it: a record's name is its seq and the store refuses a second
object under a taken name, so one replica wins; the one that lost (`lost-race`) follows
the winner's records (one GET a cycle) and takes over only when they stop coming for one
and a half intervals, so one replica witnesses each destination. Nothing here runs in a
webhook's answer; each destination's blocking I/O runs in a thread with a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from auditlock import sinks
from auditlock.ledger.keys import Signer
from auditlock.ledger.limits import MAX_WITNESS_BYTES
from auditlock.ledger.newest import StreamTip, newest_checkpoint
from auditlock.ledger.trusted_time import TimestampError, request_token
from auditlock.ledger.witness import (
    ChainEnd,
    Witnessed,
    chain_end,
    decode_record,
    record_name,
    token_name,
    witnessed,
)
from auditlock.operator.destination import open_options, read_newest, retention_spec
from auditlock.operator.registry import PolicyEntry, PolicyRegistry

log = logging.getLogger("auditlock.operator.witness")

DEFAULT_INTERVAL_SECONDS = 60.0
STORE_TIMEOUT = 120.0  # one destination's read and write; a hung store is a failure
TSA_TIMEOUT = 10.0

SecretReader = Callable[[str, str], dict[str, str] | None]
# Closes the streams of pods gone for good of the policies naming a destination, off
# this cycle's reading of it; returns the streams closed (reconcile.close_abandoned_in).
AbandonedCloser = Callable[[str, dict[str, StreamTip]], Awaitable[list[str]]]
# Stores events in the operator's own cluster stream (ClusterCapture.store_witness_events).
EventStore = Callable[[list[dict[str, Any]]], Awaitable[None]]
WITNESS_ACTOR = "auditlock-witness"
EVENT_TIMEOUT = 10.0


@dataclass
class WitnessSettings:
    """Chart values `witness.*`, `auditlock operator run --witness-*`."""

    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    tsa_url: str | None = None


@dataclass
class _Outcome:
    url: str
    seq: int
    streams: int  # in the destination
    named: int  # in the record: those whose newest checkpoint changed
    stamped: bool


class WitnessMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cycles = Counter(
            "auditlock_operator_witness_cycles",
            "Witness cycles (one record per destination each).",
            registry=registry,
        )
        self.records = Counter(
            "auditlock_operator_witness_records",
            "Witness records stored, by destination URL.",
            ["url"],
            registry=registry,
        )
        self.failures = Counter(
            "auditlock_operator_witness_failures",
            "Destinations a witness cycle stored no record in, or no timestamp for, by "
            "reason: destination (unreachable, refused), lost-race (another replica took "
            "the seq), tsa (no token; the record is stored without one), own-stream (the "
            "record's event did not reach the operator's collector), error.",
            ["reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "auditlock_operator_witness_cycle_seconds",
            "Wall time of one witness cycle over every destination.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.streams = Gauge(
            "auditlock_operator_witness_streams",
            "Streams the newest cycle found in the destination, by URL.",
            ["url"],
            registry=registry,
        )
        self.last_record = Gauge(
            "auditlock_operator_witness_last_record_timestamp_seconds",
            "When the newest witness record was stored, by destination URL.",
            ["url"],
            registry=registry,
        )
        self.lost = Counter(
            "auditlock_operator_witness_streams_lost",
            "Streams the witness named before and found deleted or rolled back since, by "
            "kind (deleted, rolled-back); verify --witness-key reports each as well.",
            ["kind"],
            registry=registry,
        )


@dataclass
class Witness:
    settings: WitnessSettings
    policies: PolicyRegistry
    cluster: str
    signer: Signer
    metrics: WitnessMetrics
    read_secret: SecretReader | None = None
    store_events: EventStore | None = None
    close_abandoned: AbandonedCloser | None = None
    clock: Callable[[], int] = time.time_ns
    _chains: dict[str, ChainEnd] = field(default_factory=dict)
    # Per destination: what this witness's records named for each stream since it last
    # read its chain, so a record names only what changed (FORMAT.md section 16).
    _named: dict[str, dict[str, Witnessed]] = field(default_factory=dict)
    # Destinations another replica witnesses (it won a seq): followed, not written, while
    # its records keep coming; monotonic time each was last seen to advance.
    _standby: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._every(), name="witness")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_seconds)
            try:
                await self.cycle()
            except Exception:
                self.metrics.failures.labels("error").inc()
                log.exception(
                    "witness cycle failed; next in %.0f s", self.settings.interval_seconds
                )

    def destinations(self) -> list[PolicyEntry]:
        """One policy per destination URL (the oldest name first: its credentials are
        used to read and write)."""
        chosen: dict[str, PolicyEntry] = {}
        for namespace in sorted(self.policies.namespaces()):
            for entry in sorted(self.policies.in_namespace(namespace), key=lambda e: e.name):
                chosen.setdefault(entry.spec.destination.url, entry)
        return [chosen[url] for url in sorted(chosen)]

    async def cycle(self) -> list[_Outcome]:
        """One record in every destination; returns what was stored."""
        started = time.monotonic()
        stored = []
        for entry in self.destinations():
            outcome = await self._witness(entry)
            if outcome is not None:
                stored.append(outcome)
        self.metrics.cycles.inc()
        elapsed = time.monotonic() - started
        self.metrics.duration.observe(elapsed)
        log.info(
            "witness: %d record(s) stored (%s) in %.2f s",
            len(stored),
            ", ".join(f"{o.url} #{o.seq}: {o.named} of {o.streams} streams" for o in stored)
            or "none",
            elapsed,
        )
        return stored

    async def _witness(self, entry: PolicyEntry) -> _Outcome | None:
        url = entry.spec.destination.url
        try:
            secret = await asyncio.to_thread(self._credentials, entry)
            destination = sinks.open(url, **open_options(entry.spec, secret))
        except Exception as exc:
            self._failed(url, "destination", exc)
            return None
        try:
            if url in self._standby:
                another = await asyncio.wait_for(
                    asyncio.to_thread(self._follow, url, destination), STORE_TIMEOUT
                )
                if another:
                    return None
            tips, end = await asyncio.wait_for(
                asyncio.to_thread(self._read, url, destination), STORE_TIMEOUT
            )
            await self._close_abandoned(url, destination, tips)
            named = self._named.get(url, {})
            self._look_back(url, named, tips)
            changed = tuple(e for e in witnessed(tips.values()) if named.get(e.stream) != e)
            name, data = end.record(
                self.cluster,
                self.signer,
                changed,
                time_ns=self.clock(),
                interval_ms=int(self.settings.interval_seconds * 1000),
            )
            token = await self._timestamp(data)
            await asyncio.wait_for(
                asyncio.to_thread(self._store, entry, destination, name, data, token),
                STORE_TIMEOUT,
            )
        except sinks.ObjectConflict as exc:
            # Another replica stored this seq: follow its records from here, and take over
            # only when they stop coming.
            self._chains[url] = end
            self._named.pop(url, None)
            self._standby[url] = time.monotonic()
            self._failed(url, "lost-race", exc)
            return None
        except (sinks.DestinationError, OSError, TimeoutError) as exc:
            self._forget(url)
            self._failed(url, "destination", exc)
            return None
        finally:
            with contextlib.suppress(Exception):
                destination.close()
        self._chains[url] = end.after(data)
        self._named.setdefault(url, {}).update((e.stream, e) for e in changed)
        self.metrics.records.labels(url).inc()
        self.metrics.streams.labels(url).set(len(tips))
        self.metrics.last_record.labels(url).set(time.time())
        await self._record_in_own_stream(url, name, data, len(changed), token is not None)
        return _Outcome(url, end.seq, len(tips), len(changed), token is not None)

    async def _close_abandoned(
        self, url: str, destination: sinks.Destination, tips: dict[str, StreamTip]
    ) -> None:
        """Close what is due off this cycle's reading; the record is stored regardless
        (a closer that fails is logged and counted, and looks again next cycle)."""
        if self.close_abandoned is None:
            return
        try:
            closed = await self.close_abandoned(url, tips)
        except Exception:
            self.metrics.failures.labels("error").inc()
            log.exception("witness: closing abandoned streams in %s failed", url)
            return
        if closed:
            await asyncio.wait_for(
                asyncio.to_thread(_read_again, destination, tips, closed), STORE_TIMEOUT
            )

    async def _record_in_own_stream(
        self, url: str, name: str, data: bytes, named: int, stamped: bool
    ) -> None:
        """The record, by digest, as an event of the operator's own cluster stream: a
        second, independently signed and stored trace of every record (FORMAT.md
        section 16, "Witness events"), so witness records deleted from a destination
        are visible from the operator's trail as well."""
        if self.store_events is None:
            return
        record = decode_record(data).record
        url_id = hashlib.sha256(url.encode()).hexdigest()[:12]
        event = {
            "id": f"witness-{self.cluster}-{url_id}-{record.seq}",
            "time": record.time,
            "category": "data",
            "action": "witness.recorded",
            "outcome": "success",
            "actor": {"kind": "system", "name": WITNESS_ACTOR},
            "target": {"resource": "witnessrecords", "name": name},
            "details": {
                "witness": {
                    "destination": url,
                    "seq": record.seq,
                    "digest": hashlib.sha256(data.split(b"\n", 1)[0]).hexdigest(),
                    "streams": named,
                    "timestamped": stamped,
                }
            },
        }
        try:
            await asyncio.wait_for(self.store_events([event]), EVENT_TIMEOUT)
        except Exception as exc:  # the record is stored; only its second trace is missing
            self.metrics.failures.labels("own-stream").inc()
            log.warning("witness: record %s of %s not in the operator's stream: %s",
                        record.seq, url, exc)  # fmt: skip

    def _look_back(self, url: str, named: dict[str, Witnessed], tips: dict[str, StreamTip]) -> None:
        """Streams named before that are gone or behind now: said at once (log, metric),
        not only when an auditor runs verify. Each is said once: the record then names
        what is there now."""
        for stream, seen in named.items():
            tip = tips.get(stream)
            if tip is None:
                kind, now = "deleted", "it is gone"
            elif (tip.epoch, tip.index) < (seen.epoch, seen.index):
                kind, now = (
                    "rolled-back",
                    f"its newest is checkpoint {tip.index} of epoch {tip.epoch}",
                )
            else:
                continue
            self.metrics.lost.labels(kind).inc()
            log.warning("witness: stream %s in %s was witnessed at checkpoint %d of epoch %d and "
                        "%s: %s", stream, url, seen.index, seen.epoch, now, kind)  # fmt: skip
        for stream in [s for s in named if s not in tips]:
            del named[stream]

    def _follow(self, url: str, destination: sinks.Destination) -> bool:
        """Read the records another replica stored since the last look (a GET per record,
        no listing); True while it keeps witnessing this destination, False once it has
        been silent for one and a half intervals (this replica then takes over)."""
        end = self._chains[url]
        while True:
            try:
                data = destination.get(
                    record_name(self.cluster, end.seq), max_bytes=MAX_WITNESS_BYTES
                )
            except sinks.ObjectNotFound:
                break
            end = end.after(data)
            self._standby[url] = time.monotonic()
        self._chains[url] = end
        if time.monotonic() - self._standby[url] < 1.5 * self.settings.interval_seconds:
            return True
        del self._standby[url]
        log.info("witness: no record in %s from another replica for %.0f s; taking over",
                 url, 1.5 * self.settings.interval_seconds)  # fmt: skip
        return False

    def _forget(self, url: str) -> None:
        """Read the chain again, and name every stream in the next record."""
        self._chains.pop(url, None)
        self._named.pop(url, None)
        self._standby.pop(url, None)

    def _credentials(self, entry: PolicyEntry) -> dict[str, str] | None:
        located = entry.spec.destination.s3 or entry.spec.destination.gcs
        if located is None or located.credentials_secret is None or self.read_secret is None:
            return None
        return self.read_secret(entry.namespace, located.credentials_secret.name)

    def _read(
        self, url: str, destination: sinks.Destination
    ) -> tuple[dict[str, StreamTip], ChainEnd]:
        end = self._chains.get(url)
        if end is None:
            end = chain_end(destination, self.cluster)
        return read_newest(url, destination), end

    def _store(
        self,
        entry: PolicyEntry,
        destination: sinks.Destination,
        name: str,
        data: bytes,
        token: bytes | None,
    ) -> None:
        retention = retention_spec(entry.spec)
        destination.put(name, data, retention)
        if token is not None:
            destination.put(token_name(name), token, retention)

    async def _timestamp(self, data: bytes) -> bytes | None:
        url = self.settings.tsa_url
        if not url:
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            return await request_token(self._session, url, data, time_limit=TSA_TIMEOUT)
        except (TimestampError, aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.failures.labels("tsa").inc()
            log.warning("witness: no timestamp from %s (the record is stored without): %s",
                        url, exc)  # fmt: skip
            return None

    def _failed(self, url: str, reason: str, exc: BaseException) -> None:
        self.metrics.failures.labels(reason).inc()
        log.warning("witness: no record in %s (%s): %s", url, reason, exc)


def _read_again(
    destination: sinks.Destination, tips: dict[str, StreamTip], streams: list[str]
) -> None:
    """The newest checkpoint of each stream just closed (its `abandon` one), in `tips`:
    the reading the refresh and the trail watcher reuse, and what this cycle's record
    names."""
    for stream in streams:
        tip = newest_checkpoint(destination, stream)
        if tip is not None:
            tips[stream] = tip
