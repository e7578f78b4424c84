"""Offline verification of a ledger: docs/FORMAT.md section 11, step by step.

    verify(destination, options) -> VerifyReport

      step                         module (verify_*.py)   codes
      1    list every object       inventory              empty, unexpected-object
      2    keys, rotations, trust  trust                  key-*, rotation-*
      3    each stream by epoch    streams                epoch-missing, restart
      3.1  checkpoints             checkpoints            checkpoint-*, bad-signature, ...
      3.2  segment names           segments               segment-name, events-missing, ...
      3.3  lines                   events                 chain-broken, event-invalid, ...
      3.4  roots                   events, segments       root-mismatch, checkpoint-fork
      3.5  open streams            segments               stream-stale
      4    retention               retention              not-locked, retention-*
      6    the operator's witness  witness                witness-*, timestamp-*

Every step returns its findings (verify_findings.py); `Notes` takes them into the report in
order. `verify` never raises for bad data: corrupt, truncated, misplaced or foreign
objects become findings that name the stream, epoch, sequence range or object, and the
reason, and an error nothing foresaw while checking one object becomes a `verify-error`
finding naming it, so one bad object never hides the verdict on the rest. Only a
destination that cannot be listed at all raises DestinationError.

Speed matters (an auditor verifies millions of events): each line is hashed once, and
each check has its fast path inside (verify_events.py). `options.jobs` verifies streams
in parallel processes (verify_parallel.py). To read the events verify accepted, iterate a
`Verification` (docs/architecture.md, "Verify as a library").

The store is treated as hostile (docs/FORMAT.md section 11, "A hostile store"): every
read is capped at the size FORMAT.md allows for that object (limits.py) and every parse
is bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

from auditlock.ledger.fetch import prefetch
from auditlock.ledger.report import StreamSummary, VerifyReport
from auditlock.ledger.verify_context import (
    DEFAULT_SLACK_SECONDS,
    READ_THREADS,
    AcceptedConsumerError,
    OnAccepted,
    StreamContext,
    VerifyOptions,
    now_of,
)
from auditlock.ledger.verify_events import AcceptedLines, VerifiedEvent
from auditlock.ledger.verify_findings import MAX_FINDINGS_PER_STREAM, Notes, Place, describe
from auditlock.ledger.verify_inventory import Inventory, list_objects
from auditlock.ledger.verify_retention import RETENTION_CLOCK_SKEW_NS, locked_long_enough
from auditlock.ledger.verify_streams import StreamResult, verify_stream
from auditlock.ledger.verify_trust import Trust, load_trust
from auditlock.ledger.verify_witness import check_witnesses
from auditlock.sinks.base import Destination

__all__ = [
    "DEFAULT_SLACK_SECONDS",
    "MAX_FINDINGS_PER_STREAM",
    "READ_THREADS",
    "RETENTION_CLOCK_SKEW_NS",
    "AcceptedConsumerError",
    "OnAccepted",
    "Verification",
    "VerifiedEvent",
    "VerifyOptions",
    "parse_time_option",
    "verify",
]


def verify(destination: Destination, options: VerifyOptions | None = None) -> VerifyReport:
    """Verify everything under `destination`; see the module docstring."""
    return Verification(destination, options).run()


class Verification:
    """One verification of a store. `run()` returns the report; iterating yields the
    events verify accepts (those `events_verified` counts), stream by stream in stream
    order, each once the checkpoint root over it matched, and `report` is complete when
    the iteration ends."""

    def __init__(self, destination: Destination, options: VerifyOptions | None = None) -> None:
        self.destination = destination
        self.options = options or VerifyOptions()
        self.report = VerifyReport(url=destination.url)

    def run(self) -> VerifyReport:
        consumer = self.options.on_accepted
        for accepted in self._steps(keep_lines=consumer is not None):
            assert consumer is not None
            try:
                consumer(accepted.stream, accepted.epoch, accepted.first_seq, accepted.lines)
            except Exception as exc:
                raise AcceptedConsumerError(f"on_accepted: {describe(exc)}") from exc
        return self.report

    def __iter__(self) -> Iterator[VerifiedEvent]:
        for accepted in self._steps(keep_lines=True):
            for offset, line in enumerate(accepted.lines):
                yield VerifiedEvent(
                    accepted.stream, accepted.epoch, accepted.first_seq + offset, line
                )

    def _steps(self, *, keep_lines: bool) -> Iterator[AcceptedLines]:
        options, report = self.options, self.report
        notes = Notes(report)
        ctx = StreamContext(self.destination, options, now_of(options))
        # 1. List every object.
        inventory, found = list_objects(list(self.destination.list("")))
        notes.add(found)
        # 2. Load the keys, the rotation records, then the certificates; build the
        # trusted key sets.
        trust = load_trust(
            options.public_keys,
            inventory.keys,
            inventory.rotations,
            inventory.certificates,
            ctx.read,
            notes.guard,
            notes.add,
        )
        report.trust = trust.describe()
        # 3. Each stream, epoch by epoch.
        if options.jobs > 1 and not keep_lines and options.on_accepted is None:
            self._streams_in_parallel(inventory, trust, notes, ctx)
        else:
            for stream in sorted(inventory.streams):
                notes.new_stream()
                result = StreamResult(StreamSummary(stream, epochs=len(inventory.streams[stream])))
                report.streams.append(result.summary)
                with notes.guard(Place(stream)):
                    yield from verify_stream(
                        ctx,
                        trust,
                        notes,
                        stream,
                        inventory.streams[stream],
                        result,
                        keep_lines=keep_lines,
                    )
                report.events_verified += result.events_verified
                report.checkpoints_verified += result.checkpoints_verified
        # 4. Retention.
        if options.check_retention:
            self._retention(inventory, notes, ctx)
        # 6. The operator's witness, when its keys are given.
        if options.witness_keys:
            with notes.guard():
                found, report.witness = check_witnesses(
                    ctx, inventory.witnesses, inventory.checkpoint_names()
                )
                notes.new_stream()
                notes.add(found)

    def _streams_in_parallel(
        self, inventory: Inventory, trust: Trust, notes: Notes, ctx: StreamContext
    ) -> None:
        from auditlock.ledger.verify_parallel import verify_in_processes

        for outcome in verify_in_processes(
            self.destination.url, self.options, ctx.now_ns, trust, inventory.streams
        ):
            self.report.streams.append(outcome.result.summary)
            notes.findings.extend(outcome.findings)
            notes.warnings.extend(outcome.warnings)
            self.report.events_verified += outcome.result.events_verified
            self.report.checkpoints_verified += outcome.result.checkpoints_verified
            ctx.object_time.update(outcome.result.object_time)

    def _retention(self, inventory: Inventory, notes: Notes, ctx: StreamContext) -> None:
        days = self.options.require_retention_days
        for name, info in prefetch(
            self.destination.retention, inventory.names, workers=ctx.threads
        ):
            with notes.guard(object=name):
                listed, found = locked_long_enough(
                    name, info, days, ctx.object_time.get(name), ctx.now_ns
                )
                if listed is not None:
                    self.report.objects.append(listed)
                notes.add(found)


def parse_time_option(text: str) -> int:
    """--since/--until: RFC 3339 (any offset) -> ns since the Unix epoch; ValueError if bad."""
    from auditlock.ledger.timestamps import normalize_time, parse_ns

    return parse_ns(normalize_time(text))
