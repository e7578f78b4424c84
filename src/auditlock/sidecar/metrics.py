"""Prometheus metrics of one sidecar (own registry, so tests can run several)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from auditlock.metric_factory import MetricFactory

NS = "auditlock_sidecar"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        m = MetricFactory(self.registry, NS)
        self.events_in = m.counter("events_received", "Events accepted into the spool", ["input"])
        self.events_rejected = m.counter(
            "events_rejected", "Events refused, by input and reason", ["input", "reason"]
        )
        self.events_filtered = m.counter(
            "events_filtered", "Events dropped by the policy filter", ["input"]
        )
        self.events_out = m.counter("events_shipped", "Events stored under lock at the destination")
        self.bytes_in = m.counter("bytes_received", "Bytes read by inputs", ["input"])
        self.bytes_out = m.counter("bytes_uploaded", "Bytes of ledger objects stored")
        self.connections_closed = m.counter(
            "forward_connections_closed",
            "Forward connections closed by the sidecar, by reason",
            ["reason"],
        )
        self.connections_open = m.gauge(
            "connections_open", "Open connections, by listener", ["listener"]
        )
        self.connections_refused = m.counter(
            "connections_refused",
            "Connections closed at once: the listener had max_connections open",
            ["listener"],
        )
        self.connections_timed_out = m.counter(
            "connections_timed_out",
            "Connections closed for taking too long, by listener and phase "
            "(handshake, header, body, frame, idle)",
            ["listener", "phase"],
        )
        self.duplicate_chunks = m.counter(
            "forward_duplicate_chunks",
            "Retransmitted Forward chunks recognised and not stored twice",
        )
        self.duplicate_requests = m.counter(
            "http_duplicate_requests",
            "HTTP intake requests whose Idempotency-Key was already stored (not stored twice)",
        )
        self.pushback = m.counter(
            "pushback", "Times intake refused or delayed input: spool full", ["input"]
        )
        self.tap_errors = m.counter(
            "tap_errors",
            "Exceptions raised by an intake tap (ignored: the events were stored), by tap",
            ["tap"],
        )
        self.config_files_skipped = m.counter(
            "config_files_skipped",
            "Watched entries not hashed (FIFO, link leaving the volume, too large, past the "
            "file cap, ...), counted when first seen or when the reason changes",
            ["reason"],
        )
        self.spool_write_errors = m.counter(
            "spool_write_errors",
            "Spool writes that failed (disk full, file too large, I/O error); none acknowledged",
        )
        self.spool_damage = m.counter(
            "spool_damage",
            "Damage found in the spool at start (each also logged with file and offset)",
        )
        self.spool_records_lost = m.counter(
            "spool_records_lost",
            "Acknowledged spool records not yet shipped that damage made unreadable",
        )
        self.proxy_failures = m.counter(
            "access_proxy_failures",
            "Access proxy exchanges that did not complete, by reason (body_too_large, "
            "upstream_unreachable, upstream_aborted, client_closed) or connections closed at "
            "once (connection_limit)",
            ["reason"],
        )
        self.uploads = m.counter("uploads", "Object uploads by result", ["result"])
        self.redacted = m.counter("fields_redacted", "Fields replaced by redaction")
        self.spool_bytes = m.gauge("spool_bytes", "Bytes held in the spool")
        self.spool_fill = m.gauge("spool_fill_ratio", "Spool bytes / spool limit")
        self.upload_lag = m.gauge(
            "upload_lag_seconds",
            "Age of the oldest spooled event not yet stored under lock (0 when none)",
        )
        self.checkpoint_age = m.gauge(
            "last_checkpoint_age_seconds",
            "Seconds since the last checkpoint was stored (-1 before the first)",
        )
        self.destination_failing = m.gauge(
            "destination_failing_seconds",
            "Seconds since the destination began failing (uploads or resuming the stream "
            "erroring without a success since; 0 while it works)",
        )
        self.heartbeat = m.gauge(
            "heartbeat_seconds",
            "Configured heartbeat: an idle stream stores a checkpoint at least this often",
        )
        self.last_seq = m.gauge("ledger_last_seq", "Last ledger sequence stored")
        self.certificate_requests = m.counter(
            "certificate_requests",
            "Requests to the operator to certify this collector's per-pod key, by outcome "
            "(certified, refused: unreachable, or not certified yet)",
            ["outcome"],
        )
        self.upload_seconds = m.histogram(
            "upload_seconds",
            "Time to store one sealed batch",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.last_checkpoint_monotonic: float | None = None
        self.checkpoint_age.set_function(self._checkpoint_age)
        self.destination_failing_since: float | None = None  # time.monotonic()
        self.destination_failing.set_function(self._destination_failing)

    def _checkpoint_age(self) -> float:
        if self.last_checkpoint_monotonic is None:
            return -1.0
        return time.monotonic() - self.last_checkpoint_monotonic

    def destination_failed(self) -> None:
        """An upload or a resume failed; a streak already running keeps its start."""
        if self.destination_failing_since is None:
            self.destination_failing_since = time.monotonic()

    def destination_worked(self) -> None:
        self.destination_failing_since = None

    def _destination_failing(self) -> float:
        if self.destination_failing_since is None:
            return 0.0
        return time.monotonic() - self.destination_failing_since
