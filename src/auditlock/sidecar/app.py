"""Wiring: the sidecar process, from start to a clean (or abrupt) stop.

Start order: health server (so the liveness probe answers at once) → spool recovery →
ledger stream resume → shipping → sources. /readyz turns 200 when all of that is up.

SIGTERM/SIGINT: stop intake (listeners close; Forward connections finish the batch they
are committing and acknowledge it), wait for pending spool writes, ship everything,
store the stream-closed checkpoint, exit 0 — within `shutdown_grace_seconds`. If the
grace period runs out the process exits anyway; the spool still holds every
acknowledged event and the next start ships it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from auditlock.sidecar import memory
from auditlock.sidecar.config import SidecarConfig
from auditlock.sidecar.health import HealthServer
from auditlock.sidecar.intake import Intake
from auditlock.sidecar.metrics import Metrics
from auditlock.sidecar.pipeline import Pipeline
from auditlock.sidecar.pipeline.recent_ids import RecentIds
from auditlock.sidecar.shipping import Shipper
from auditlock.sidecar.sources import Source, SourceContext, build_sources
from auditlock.sidecar.spool.spool import RecoveryReport, Spool

log = logging.getLogger("auditlock.sidecar")


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.spool = Spool(
            config.spool.dir,
            max_bytes=config.spool.max_bytes,
            segment_bytes=config.spool.segment_bytes,
            chunk_memory=config.sources.forward.chunk_memory,
        )
        recent_ids = RecentIds()
        pipeline = Pipeline(
            config.pipeline,
            config.source,
            recent_ids,
            config.sources.forward.observer_tag_prefix,
        )
        self.intake = Intake(pipeline, self.spool, self.metrics, recent_ids, config.stream.id)
        self.shipper = Shipper(config, self.spool, self.metrics)
        self.health = HealthServer(config.health, self.metrics, self.readiness, self.refresh)
        self.sources: list[Source] = []
        self.state = "starting"
        self.started_at = time.monotonic()
        self._trimmer: asyncio.Task[None] | None = None
        self.alerts: Any = None  # sidecar/alerting.py CollectorAlerts, when rules are set

    def readiness(self) -> tuple[bool, str]:
        if self.state != "running":
            return False, self.state
        if self.shipper.failed:
            return False, self.shipper.failed
        if self.spool.broken:
            return False, f"spool disk failed: {self.spool.broken}"
        if self.shipper.problem:
            return True, f"ready (degraded: {self.shipper.problem})"
        if self.spool.full:
            return True, "ready (degraded: spool full, intake pushes back until shipping frees it)"
        return True, "ready"

    def refresh(self) -> None:
        self.shipper.refresh_metrics()

    async def start(self) -> None:
        self._trimmer = asyncio.create_task(memory.trim_forever())
        await self.health.start()
        self.state = "recovering spool"
        await self._open_spool()
        self.state = "resuming ledger stream"
        await self.shipper.start()
        if self.config.alerts.rules_file is not None:
            # Lazily: a collector without rules never imports the alerting code.
            from auditlock.sidecar.alerting import CollectorAlerts

            self.alerts = CollectorAlerts(
                self.config.alerts,
                self.intake,
                self.metrics,
                self.config.stream.id,
                self.config.source,
            )
            await self.alerts.start()
        self.state = "starting sources"
        await self._start_sources()
        self.state = "running"
        log.info("sidecar ready in %.2fs", time.monotonic() - self.started_at)

    async def _open_spool(self) -> None:
        self.spool.on_write_error = self.metrics.spool_write_errors.inc
        try:
            report = await asyncio.to_thread(self.spool.open)
        except OSError as exc:
            raise StartupError(f"cannot open the spool in {self.config.spool.dir}: {exc}") from None
        for problem in report.problems:
            log.warning("spool recovery: %s", problem)
        log.info(
            "spool recovered: %d segment(s), %d record(s), %d not yet stored%s",
            report.segments,
            report.records,
            report.unreleased_records,
            f"; {len(report.damage)} damage(s) found" if report.damage else "",
        )
        if report.damage:
            await self._report_damage(report)

    async def _report_damage(self, report: RecoveryReport) -> None:
        """Log, count and record in the trail (a signed `alert` event) what damage cost."""
        for damage in report.damage:
            log.error("spool damaged: %s", damage)
            self.metrics.spool_damage.inc()
        self.metrics.spool_records_lost.inc(report.lost_records)
        event = spool_damage_event(str(self.config.spool.dir), report)
        prepared = self.intake.prepare(SPOOL_INPUT, [(SPOOL_TAG, time.time_ns(), event)])
        await self.intake.commit(SPOOL_INPUT, [(prepared, None)])

    async def _start_sources(self) -> None:
        context = SourceContext(
            self.intake,
            state_dir=Path(self.config.spool.dir),
            private=[Path(f) for f in (self.config.stream.signing_key_file,) if f is not None],
        )
        self.sources = build_sources(self.config.sources, context)
        for source in self.sources:
            await source.start()

    def source(self, kind: type) -> Any:
        return next(s for s in self.sources if isinstance(s, kind))

    async def stop(self) -> None:
        """Graceful stop: intake off, flush, ship, closed checkpoint."""
        self.state = "stopping"
        log.info("stopping: closing intake")
        for source in reversed(self.sources):
            await source.stop()
        if self.alerts is not None:  # its last alert events go in before intake closes
            await self.alerts.stop()
        self.intake.close()
        await self.spool.flush()
        log.info("stopping: shipping what is spooled and closing the stream")
        await self.shipper.drain_and_close()
        await self.spool.settle()
        self.spool.close()
        await self.health.stop()
        if self._trimmer is not None:
            self._trimmer.cancel()
        log.info("stopped: stream closed after %s event(s)", self.spool.released_next_seq)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
        except StartupError as exc:
            log.error("sidecar failed to start: %s", exc)
            await self.health.stop()
            return 1
        except Exception:
            log.exception("sidecar failed to start")
            await self.health.stop()
            return 1
        memory.settle_gc()
        await stop.wait()
        try:
            await asyncio.wait_for(self.stop(), self.config.shutdown_grace_seconds)
        except RuntimeError as exc:
            log.error("stopped without closing the stream: %s", exc)
            return 1
        except TimeoutError:
            log.error(
                "shutdown took longer than %.0fs; exiting, the spool keeps unshipped events",
                self.config.shutdown_grace_seconds,
            )
            await self.shipper.abort()
            # An upload may still block a worker thread (a destination that does not
            # answer); waiting for it would overrun the grace period. Everything
            # acknowledged is fsynced in the spool, so leave now.
            logging.shutdown()
            os._exit(1)
        return 0


class StartupError(Exception):
    """A start-up failure whose message says everything (logged without a traceback)."""


SPOOL_INPUT = "spool"
SPOOL_TAG = "auditlock.spool"


def spool_damage_event(directory: str, report: RecoveryReport) -> dict[str, Any]:
    """The `alert` event that puts spool damage found at start into the trail."""
    return {
        "category": "alert",
        "action": "spool.damaged",
        "outcome": "failure",
        "actor": {"kind": "system", "name": "auditlock-collector"},
        "target": {"resource": "spool", "name": directory},
        "details": {
            "records_lost": report.lost_records,
            "may_be_stored_twice": report.reship_all,
            "damage": [str(d) for d in report.damage[:20]],
            "damage_count": len(report.damage),
        },
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(config: SidecarConfig) -> int:
    """Run the sidecar process until SIGTERM; never returns (exits the process)."""
    setup_logging(config.log_level)
    memory.limit_arenas()  # before any worker thread exists
    code = 1
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(Sidecar(config).run())
    # Exit now: a destination call stuck in an upload thread must not hold the process
    # past its grace period (the interpreter would join that thread). Everything that
    # matters is fsynced (spool) or stored (closed checkpoint) at this point.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
