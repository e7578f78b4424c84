"""Prometheus metrics of one sidecar (own registry, so tests can run several)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NS = "auditlock_sidecar"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.events_in = Counter(
            f"{NS}_events_received", "Events accepted into the spool", ["input"], registry=r
        )
        self.events_rejected = Counter(
            f"{NS}_events_rejected",
            "Events refused, by input and reason",
            ["input", "reason"],
            registry=r,
        )
        self.events_filtered = Counter(
            f"{NS}_events_filtered", "Events dropped by the policy filter", ["input"], registry=r
        )
        self.events_out = Counter(
            f"{NS}_events_shipped", "Events stored under lock at the destination", registry=r
        )
        self.bytes_in = Counter(
            f"{NS}_bytes_received", "Bytes read by inputs", ["input"], registry=r
        )
        self.bytes_out = Counter(
            f"{NS}_bytes_uploaded", "Bytes of ledger objects stored", registry=r
        )
        self.connections_closed = Counter(
            f"{NS}_forward_connections_closed",
            "Forward connections closed by the sidecar, by reason",
            ["reason"],
            registry=r,
        )
        self.connections_open = Gauge(
            f"{NS}_connections_open", "Open connections, by listener", ["listener"], registry=r
        )
        self.connections_refused = Counter(
            f"{NS}_connections_refused",
            "Connections closed at once: the listener had max_connections open",
            ["listener"],
            registry=r,
        )
        self.connections_timed_out = Counter(
            f"{NS}_connections_timed_out",
            "Connections closed for taking too long, by listener and phase "
            "(handshake, header, body, frame, idle)",
            ["listener", "phase"],
            registry=r,
        )
        self.duplicate_chunks = Counter(
            f"{NS}_forward_duplicate_chunks",
            "Retransmitted Forward chunks recognised and not stored twice",
            registry=r,
        )
        self.duplicate_requests = Counter(
            f"{NS}_http_duplicate_requests",
            "HTTP intake requests whose Idempotency-Key was already stored (not stored twice)",
            registry=r,
        )
        self.pushback = Counter(
            f"{NS}_pushback",
            "Times intake refused or delayed input: spool full",
            ["input"],
            registry=r,
        )
        self.tap_errors = Counter(
            f"{NS}_tap_errors",
            "Exceptions raised by an intake tap (ignored: the events were stored), by tap",
            ["tap"],
            registry=r,
        )
        self.config_files_skipped = Counter(
            f"{NS}_config_files_skipped",
            "Watched entries not hashed (FIFO, link leaving the volume, too large, past the "
            "file cap, ...), counted when first seen or when the reason changes",
            ["reason"],
            registry=r,
        )
        self.spool_write_errors = Counter(
            f"{NS}_spool_write_errors",
            "Spool writes that failed (disk full, file too large, I/O error); none acknowledged",
            registry=r,
        )
        self.spool_damage = Counter(
            f"{NS}_spool_damage",
            "Damage found in the spool at start (each also logged with file and offset)",
            registry=r,
        )
        self.spool_records_lost = Counter(
            f"{NS}_spool_records_lost",
            "Acknowledged spool records not yet shipped that damage made unreadable",
            registry=r,
        )
        self.proxy_failures = Counter(
            f"{NS}_access_proxy_failures",
            "Access proxy exchanges that did not complete, by reason (body_too_large, "
            "upstream_unreachable, upstream_aborted, client_closed) or connections closed at "
            "once (connection_limit)",
            ["reason"],
            registry=r,
        )
        self.uploads = Counter(f"{NS}_uploads", "Object uploads by result", ["result"], registry=r)
        self.redacted = Counter(f"{NS}_fields_redacted", "Fields replaced by redaction", registry=r)
        self.spool_bytes = Gauge(f"{NS}_spool_bytes", "Bytes held in the spool", registry=r)
        self.spool_fill = Gauge(f"{NS}_spool_fill_ratio", "Spool bytes / spool limit", registry=r)
        self.upload_lag = Gauge(
            f"{NS}_upload_lag_seconds",
            "Age of the oldest spooled event not yet stored under lock (0 when none)",
            registry=r,
        )
        self.checkpoint_age = Gauge(
            f"{NS}_last_checkpoint_age_seconds",
            "Seconds since the last checkpoint was stored (-1 before the first)",
            registry=r,
        )
        self.destination_failing = Gauge(
            f"{NS}_destination_failing_seconds",
            "Seconds since the destination began failing (uploads or resuming the stream "
            "erroring without a success since; 0 while it works)",
            registry=r,
        )
        self.heartbeat = Gauge(
            f"{NS}_heartbeat_seconds",
            "Configured heartbeat: an idle stream stores a checkpoint at least this often",
            registry=r,
        )
        self.last_seq = Gauge(f"{NS}_ledger_last_seq", "Last ledger sequence stored", registry=r)
        self.upload_seconds = Histogram(
            f"{NS}_upload_seconds",
            "Time to store one sealed batch",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
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
