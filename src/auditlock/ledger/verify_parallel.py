"""`verify --jobs N`: step 3 for several streams at once, one process per stream.

Streams are independent (FORMAT.md section 11: every check of step 3 looks inside one
stream; the per-stream backstop of 100 findings too), so each worker runs
`streams.verify_stream` on its own and returns the stream's findings, warnings and
summary. The parent adds them to the report in stream order, so the report is the same
as with one process. Hashing and decoding are CPU work that Python threads would not
spread over cores; processes do. Each worker opens the destination again from its URL
and keeps its own reads in flight on remote stores (fetch.py), so reads from s3:// and
gs:// overlap within and across workers. One stream is one worker's work: a store with a
single stream verifies at the one-core rate.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from auditlock.ledger.report import Finding, StreamSummary, VerifyReport
from auditlock.ledger.verify_context import StreamContext, VerifyOptions
from auditlock.ledger.verify_findings import Notes, Place
from auditlock.ledger.verify_inventory import EpochObjects
from auditlock.ledger.verify_streams import StreamResult, verify_stream
from auditlock.ledger.verify_trust import Trust


@dataclass
class StreamOutcome:
    result: StreamResult
    findings: list[Finding]
    warnings: list[Finding]


def verify_in_processes(
    url: str,
    options: VerifyOptions,
    now_ns: int,
    trust: Trust,
    streams: dict[str, dict[int, EpochObjects]],
) -> Iterator[StreamOutcome]:
    """Each stream's outcome, in stream order, verified by `options.jobs` processes."""
    # Keys travel inside `trust`; the options' own key objects do not pickle.
    plain = dataclasses.replace(
        options,
        public_keys=[],
        jobs=1,
        on_accepted=None,
        witness_keys=[],
        tsa_certificates=[],
    )
    # fork: the workers start with verify already imported and never re-run the caller's
    # main module. Nothing runs threads of ours at this point (reads of step 3 have not
    # started; those of step 4 come after).
    context = multiprocessing.get_context("fork")
    names = sorted(streams)
    with ProcessPoolExecutor(max_workers=options.jobs, mp_context=context) as pool:
        yield from pool.map(
            _verify_one,
            [url] * len(names),
            [plain] * len(names),
            [now_ns] * len(names),
            [trust] * len(names),
            names,
            [streams[n] for n in names],
        )


def _verify_one(
    url: str,
    options: VerifyOptions,
    now_ns: int,
    trust: Trust,
    stream: str,
    epochs: dict[int, EpochObjects],
) -> StreamOutcome:
    from auditlock import sinks

    report = VerifyReport(url=url)
    notes = Notes(report)
    ctx = StreamContext(sinks.open(url), options, now_ns)
    result = StreamResult(StreamSummary(stream, epochs=len(epochs)))
    with notes.guard(Place(stream)):
        for _ in verify_stream(ctx, trust, notes, stream, epochs, result):
            pass
    result.object_time = ctx.object_time
    return StreamOutcome(result, report.findings, report.warnings)
