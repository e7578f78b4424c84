"""Step 6: the operator's witness records (docs/FORMAT.md 11.6 and section 16).

Only with witness keys (`verify --witness-key`). For each witness, in seq order:

    1  records 0..max exist, parse, are signed by a given witness key
       witness-gap, witness-corrupt, witness-signature
    2  each commits to the one before, and time never goes back      witness-chain-broken
    3  the newest is no older than its interval + slack              witness-stale
    4  every checkpoint a record names exists with the witnessed digest
       witness-missing-checkpoint, witness-mismatch
    5  with TSA certificates: each record's token                   timestamp-*

Memory is bounded by the number of streams, not of records: records are read a few at a
time (each at most 16 MiB), and per stream only the last witnessed checkpoint and one
running tally per finding code are kept. A checkpoint named by consecutive records is
read once; problems are reported once per stream and code, counted, naming the first and
last witnessed checkpoint affected (a deleted stream is one finding, not one per minute).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.errors import FormatError, SignatureError
from auditlock.ledger.fetch import prefetch
from auditlock.ledger.keys import key_id, verify
from auditlock.ledger.limits import MAX_CHECKPOINT_BYTES, MAX_WITNESS_BYTES
from auditlock.ledger.names import checkpoint_name
from auditlock.ledger.report import Finding
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.trusted_time import MAX_RESPONSE_BYTES, TimestampError, verify_token
from auditlock.ledger.verify_context import StreamContext
from auditlock.ledger.verify_findings import Place, describe, holes
from auditlock.ledger.witness import (
    ZERO_DIGEST,
    SignedWitnessRecord,
    Witnessed,
    decode_record,
    first_line_digest,
    token_name,
)
from auditlock.sinks.base import DestinationError, ObjectNotFound, ObjectUnreadable

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RECORDS_AHEAD = 4  # records read ahead: at most this many x 16 MiB in memory


@dataclass
class WitnessObjects:
    """The objects of one witness, by seq."""

    records: dict[int, str] = field(default_factory=dict)
    tokens: set[int] = field(default_factory=set)


@dataclass
class _Tally:
    """One problem of one stream across records: how often, first and last place."""

    count: int = 0
    first: tuple[int, int] = (0, 0)
    last: tuple[int, int] = (0, 0)
    first_seq: int = 0
    detail: str = ""

    def add(self, position: tuple[int, int], seq: int, detail: str) -> None:
        if self.count == 0:
            self.first, self.first_seq, self.detail = position, seq, detail
        self.count += 1
        self.last = position


@dataclass
class WitnessSummary:
    records: int = 0
    newest: str | None = None
    checkpoints_compared: int = 0

    def describe(self, witness: str) -> str:
        return (
            f"witness {witness}: {self.records} valid record(s), newest {self.newest}, "
            f"{self.checkpoints_compared} witnessed checkpoint(s) compared with the store"
        )


def roots_and_intermediates(
    certificates: list[x509.Certificate],
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """Self-signed certificates are the roots; the others are intermediates."""
    roots = [c for c in certificates if c.subject == c.issuer]
    return roots, [c for c in certificates if c.subject != c.issuer]


class WitnessCheck:
    """Step 6 for one witness: `run()` returns its findings (warnings included)."""

    def __init__(
        self,
        ctx: StreamContext,
        witness: str,
        objects: WitnessObjects,
        checkpoints: set[str],
        keys: list[Ed25519PublicKey],
        tsa_certificates: list[x509.Certificate],
    ) -> None:
        self.ctx = ctx
        self.witness = witness
        self.objects = objects
        self.checkpoints = checkpoints  # every checkpoint name the store listed
        self.keys = {key_id(k): k for k in keys}
        self.roots, self.intermediates = roots_and_intermediates(tsa_certificates)
        self.summary = WitnessSummary()
        self.foreign = 0  # records signed by a key that is not a given witness key
        self._last: dict[str, Witnessed] = {}  # per stream: the last witnessed checkpoint
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._found: list[Finding] = []

    def run(self) -> list[Finding]:
        seqs = sorted(self.objects.records)
        gaps = holes(seqs)
        if gaps:
            self._found.append(
                Place().find(
                    "witness-gap",
                    f"witness {self.witness}: records {gaps} are missing (deleted)",
                    object=self.objects.records[seqs[-1]],
                )
            )
        checks = prefetch(self._compare, self._entries(seqs), workers=self.ctx.threads)
        for (entry, seq), result in checks:
            self._judge(entry, seq, result)
        if self._newest is not None:
            self._found.extend(self._stale(self._newest))
        self._found.extend(self._report_tallies())
        return self._found

    # -- 1, 2: records ------------------------------------------------------------------

    _newest: SignedWitnessRecord | None = None

    def _entries(self, seqs: list[int]) -> Iterator[tuple[Witnessed, int]]:
        """Every witnessed checkpoint that needs comparing with the store, record by
        record; judges the records themselves on the way."""
        named = [(seq, self.objects.records[seq]) for seq in seqs]
        before: tuple[int, bytes | None, int | None] | None = None  # seq, digest, time
        reads = prefetch(self._read_record, named, workers=self.ctx.threads, ahead=RECORDS_AHEAD)
        for (seq, name), data in reads:
            here = Place()
            if isinstance(data, ObjectUnreadable | FormatError):
                self._found.append(here.find("witness-corrupt", str(data), object=name))
                before = (seq, None, None)
                continue
            if isinstance(data, DestinationError):
                self._found.append(here.find("object-unreadable", str(data), object=name))
                before = (seq, None, None)
                continue
            if isinstance(data, Exception):
                self._found.append(
                    here.find(
                        "verify-error", f"could not be checked: {describe(data)}", object=name
                    )
                )
                before = (seq, None, None)
                continue
            try:
                signed = decode_record(data)
            except FormatError as exc:
                self._found.append(here.find("witness-corrupt", str(exc), object=name))
                before = (seq, None, None)  # the next one's prev is not judged
                continue
            record = signed.record
            if (record.witness, record.seq) != (self.witness, seq):
                self._found.append(
                    here.find(
                        "witness-corrupt",
                        f"holds record {record.seq} of witness {record.witness}, not the one "
                        "its name says",
                        object=name,
                    )
                )
                before = (seq, None, None)
                continue
            problem = self._signature_problem(signed)
            if signed.record.key_id not in self.keys:
                self.foreign += 1
            if problem:
                self._found.append(here.find("witness-signature", problem, object=name))
                before = (seq, signed.digest, None)
                continue
            self._found.extend(self._chain(name, signed, before))
            if self.roots:
                self._found.extend(self._token(name, signed, data))
            before = (seq, signed.digest, record.time_ns)
            self.summary.records += 1
            self.summary.newest = record.time
            self._newest = signed
            for entry in record.streams:
                if self._needs_compare(entry, seq):
                    yield entry, seq

    def _read_record(self, item: tuple[int, str]) -> bytes:
        return self.ctx.read(item[1], MAX_WITNESS_BYTES)

    def _signature_problem(self, signed: SignedWitnessRecord) -> str:
        key = self.keys.get(signed.record.key_id)
        if key is None:
            return (
                f"signed by key {signed.record.key_id[:16]}…, which is not a given witness "
                "key (--witness-key)"
            )
        try:
            verify(key, signed.signature, signed.body, f"witness record {signed.record.seq}")
        except SignatureError as exc:
            return str(exc)
        return ""

    def _chain(
        self,
        name: str,
        signed: SignedWitnessRecord,
        before: tuple[int, bytes | None, int | None] | None,
    ) -> list[Finding]:
        record = signed.record
        here = Place()
        if record.seq == 0:
            if record.prev != ZERO_DIGEST:
                return [here.find("witness-chain-broken", "record 0 has a prev", object=name)]
            return []
        if before is None or before[0] != record.seq - 1 or before[1] is None:
            return []  # seq - 1 is missing or unusable: its own finding says so
        found = []
        if record.prev != before[1]:
            found.append(
                here.find(
                    "witness-chain-broken",
                    f"prev is not the digest of record {record.seq - 1} (it was replaced)",
                    object=name,
                )
            )
        if before[2] is not None and record.time_ns < before[2]:
            found.append(
                here.find(
                    "witness-chain-broken",
                    f"time {record.time} is earlier than record {record.seq - 1}'s",
                    object=name,
                )
            )
        return found

    # -- 3: the witness's own tail ------------------------------------------------------

    def _stale(self, newest: SignedWitnessRecord) -> list[Finding]:
        record = newest.record
        options = self.ctx.options
        now = options.until_ns if options.until_ns is not None else self.ctx.now_ns
        allowed = record.interval_ms * 1_000_000 + int(options.slack_seconds * 1e9)
        if now - record.time_ns <= allowed:
            return []
        return [
            Place().find(
                "witness-stale",
                f"witness {self.witness}: the newest record is from {record.time} "
                f"({(now - record.time_ns) / 1e9:.0f} s before {format_ns(now)}; one every "
                f"{record.interval_ms / 1000:g} s): its tail was deleted, or the witness "
                "stopped",
                object=self.objects.records[record.seq],
            )
        ]

    # -- 4: witnessed checkpoints against the store -------------------------------------

    def _needs_compare(self, entry: Witnessed, seq: int) -> bool:
        last = self._last.get(entry.stream)
        position = (entry.epoch, entry.index)
        if last is not None:
            seen = (last.epoch, last.index)
            if position == seen:
                if entry.digest != last.digest:
                    self._tally(
                        entry, "witness-mismatch", seq,
                        "the witness was shown two different checkpoints under this name",
                    )  # fmt: skip
                return False
            if position < seen:
                self._tally(
                    entry, "witness-mismatch", seq,
                    f"the witness saw the stream go back from checkpoint {last.index} of "
                    f"epoch {last.epoch} (rolled back)",
                )  # fmt: skip
        self._last[entry.stream] = entry
        return True

    def _compare(self, item: tuple[Witnessed, int]) -> bytes | None:
        entry, _ = item
        name = checkpoint_name(entry.stream, entry.epoch, entry.index)
        if name not in self.checkpoints:
            return None
        return first_line_digest(self.ctx.read(name, MAX_CHECKPOINT_BYTES))

    def _judge(self, entry: Witnessed, seq: int, result: bytes | Exception | None) -> None:
        self.summary.checkpoints_compared += 1
        if result is None or isinstance(result, ObjectNotFound):
            self._tally(
                entry, "witness-missing-checkpoint", seq,
                "deleted or rolled back after it was witnessed",
            )  # fmt: skip
        elif isinstance(result, Exception):
            self._tally(
                entry, "witness-mismatch", seq,
                f"cannot be read to compare with what was witnessed: {describe(result)}",
            )  # fmt: skip
        elif result != entry.digest:
            self._tally(
                entry, "witness-mismatch", seq,
                "the store holds other bytes than the witness saw (a split view or a "
                "replaced object)",
            )  # fmt: skip

    def _tally(self, entry: Witnessed, code: str, seq: int, detail: str) -> None:
        tally = self._tallies.setdefault((entry.stream, code), _Tally())
        tally.add((entry.epoch, entry.index), seq, detail)

    def _report_tallies(self) -> list[Finding]:
        found = []
        for (stream, code), tally in sorted(self._tallies.items()):
            epoch, index = tally.first
            what = f"checkpoint {index} of epoch {epoch}"
            if tally.count > 1:
                last_epoch, last_index = tally.last
                what += (
                    f" and {tally.count - 1} more witnessed checkpoint(s) up to checkpoint "
                    f"{last_index} of epoch {last_epoch}"
                )
            found.append(
                Place(stream, epoch).find(
                    code,
                    f"{what}, witnessed by {self.witness} in record {tally.first_seq}: "
                    f"{tally.detail}",
                    object=checkpoint_name(stream, epoch, index),
                )
            )
        return found

    # -- 5: trusted time ----------------------------------------------------------------

    def _token(self, name: str, signed: SignedWitnessRecord, data: bytes) -> list[Finding]:
        record = signed.record
        here = Place()
        if record.seq not in self.objects.tokens:
            return [here.warn("timestamp-missing", "record has no timestamp token", object=name)]
        tsr = token_name(name)
        try:
            token = self.ctx.read(tsr, MAX_RESPONSE_BYTES)
        except ObjectUnreadable as exc:
            return [here.find("timestamp-invalid", str(exc), object=tsr)]
        except DestinationError as exc:
            return [here.find("object-unreadable", str(exc), object=tsr)]
        try:
            proved = verify_token(token, data, self.roots, self.intermediates)
        except TimestampError as exc:
            return [here.find(exc.code, str(exc), object=tsr)]
        gen_ns = (proved.gen_time - _EPOCH) // timedelta(microseconds=1) * 1000
        allowed = record.interval_ms * 1_000_000 + int(self.ctx.options.slack_seconds * 1e9)
        if gen_ns - record.time_ns > allowed:
            return [
                here.find(
                    "timestamp-late",
                    f"the record claims {record.time} but the TSA first saw it at "
                    f"{format_ns(gen_ns)}: it was backdated",
                    object=tsr,
                )
            ]
        return []


def check_witnesses(
    ctx: StreamContext,
    witnesses: dict[str, WitnessObjects],
    checkpoints: set[str],
) -> tuple[list[Finding], list[str]]:
    """Step 6 for every witness in the store: (findings, one summary line per witness
    checked). A witness none of whose records a given key signed is another operator's
    (the warning `witness-unknown`); `witness-missing` when no witness is left."""
    options = ctx.options
    if not witnesses or not any(w.records for w in witnesses.values()):
        return [
            Place().find(
                "witness-missing",
                "no witness record in the store (--witness-key was given): the streams "
                "cannot be compared with what the operator saw",
            )
        ], []
    found: list[Finding] = []
    summaries = []
    for witness in sorted(witnesses):
        objects = witnesses[witness]
        check = WitnessCheck(
            ctx, witness, objects, checkpoints, options.witness_keys, options.tsa_certificates
        )
        results = check.run()
        if check.summary.records == 0 and check.foreign == len(objects.records):
            # Another operator's records (clusters may share a bucket): not ours to judge.
            found.append(
                Place().warn(
                    "witness-unknown",
                    f"witness {witness}: none of its {len(objects.records)} record(s) is signed "
                    "by a given witness key (another cluster's operator?); not checked",
                    object=objects.records[max(objects.records)],
                )
            )
            continue
        found.extend(results)
        summaries.append(check.summary.describe(witness))
    if not summaries:
        found.append(
            Place().find(
                "witness-missing",
                "no witness record signed by a given witness key (--witness-key) in the store: "
                "the streams cannot be compared with what the operator saw",
            )
        )
    return found, summaries
