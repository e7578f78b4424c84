"""Step 3.1: the checkpoints of one epoch, by index (docs/FORMAT.md 11.3.1).

Each check is one function, named for what it checks, returning its findings:

    indexes_complete       no-checkpoint, checkpoint-missing
    readable_and_placed    checkpoint-corrupt, object-unreadable, checkpoint-misplaced
    signed_by_trusted_key  unknown-key, uncertified-key, key-missing, bad-signature
    KeysStored.check       key-missing (the key is not stored beside the data)
    chains_to_previous     checkpoint-chain-broken
    follows                checkpoint-after-close, tree-shrank, heartbeat-grew,
                           time-backwards
    on_time                time-gap; warnings restart, abandoned, abandoned-adopted

`EpochCheckpoints.check` runs them in that order for each checkpoint; a checkpoint
failing one of the first three is not used further.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

from auditlock.ledger.abandon import abandon_notes
from auditlock.ledger.checkpoint import Checkpoint, SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import FormatError, SignatureError
from auditlock.ledger.fetch import prefetch
from auditlock.ledger.keys import verify as verify_signature
from auditlock.ledger.limits import MAX_CHECKPOINT_BYTES
from auditlock.ledger.lines import ZERO_HASH
from auditlock.ledger.names import key_name
from auditlock.ledger.report import Finding
from auditlock.ledger.timestamps import format_ns
from auditlock.ledger.verify_context import StreamContext
from auditlock.ledger.verify_findings import Place, WarningFinding, holes
from auditlock.ledger.verify_trust import StreamTrust, Trust
from auditlock.sinks.base import DestinationError, ObjectNotFound, ObjectUnreadable


def indexes_complete(place: Place, names: dict[int, str]) -> list[Finding]:
    """Indexes 0..max all exist (`checkpoint-missing`); an epoch with objects has at
    least one checkpoint (`no-checkpoint`)."""
    if not names:
        return [place.find("no-checkpoint", "epoch has segments but no checkpoint")]
    gaps = holes(sorted(names))
    return [place.find("checkpoint-missing", f"checkpoints {gaps} are missing")] if gaps else []


def read_checkpoints(
    ctx: StreamContext, names: dict[int, str]
) -> Iterator[tuple[int, SignedCheckpoint | Exception]]:
    """Each checkpoint decoded (section 8), by index; reads overlap on remote stores."""
    read = ctx.read
    return prefetch(
        lambda i: decode_checkpoint(read(names[i], MAX_CHECKPOINT_BYTES)),
        sorted(names),
        workers=ctx.threads,
    )


def readable_and_placed(
    place: Place, index: int, name: str, loaded: SignedCheckpoint | Exception
) -> list[Finding]:
    """It parses as section 8 says (`checkpoint-corrupt`; `object-unreadable` for a read
    that failed) and its stream/epoch/index are its name's (`checkpoint-misplaced`)."""
    if isinstance(loaded, FormatError | ObjectNotFound | ObjectUnreadable):
        return [place.find("checkpoint-corrupt", str(loaded), object=name)]
    if isinstance(loaded, DestinationError):
        return [place.find("object-unreadable", str(loaded), object=name)]
    if isinstance(loaded, Exception):
        raise loaded
    cp = loaded.checkpoint
    if (cp.stream, cp.epoch, cp.index) != (place.stream, place.epoch, index):
        return [
            place.find(
                "checkpoint-misplaced",
                f"holds checkpoint {cp.index} of stream {cp.stream} epoch {cp.epoch} "
                "(copied or rolled back)",
                object=name,
            )
        ]
    return []


def signed_by_trusted_key(
    place: Place, signed: SignedCheckpoint, name: str, allowed: StreamTrust, trust: Trust
) -> list[Finding]:
    """Its key is trusted for this stream, directly or by a certificate that covers this
    checkpoint (`unknown-key`, or `uncertified-key` where the trusted roots certify
    per-pod keys in this store), known (`key-missing`) and its signature verifies
    (`bad-signature`)."""
    cp = signed.checkpoint
    public = trust.public.get(cp.key_id)
    if cp.key_id not in allowed.keys:
        cert = trust.covering(cp.stream, cp.key_id, cp.time_ns, allowed.issuers)
        if cert is None:
            return [_untrusted(place, cp.stream, cp.key_id, cp.time_ns, name, allowed, trust)]
        public = public or cert.public
    if public is None:
        return [place.find("key-missing", f"key {cp.key_id[:16]}… is not stored", object=name)]
    try:
        verify_signature(public, signed.signature, signed.body, name)
    except SignatureError:
        return [place.find("bad-signature", "signature does not verify", object=name)]
    return []


def _untrusted(
    place: Place, stream: str, key: str, time_ns: int, name: str, allowed: StreamTrust, trust: Trust
) -> Finding:
    if allowed.issuers & trust.issuers:
        why = trust.why_uncovered(stream, key, time_ns, allowed.issuers)
        return place.find(
            "uncertified-key",
            f"signed by key {key[:16]}…, which no certificate from a trusted root covers "
            f"for this stream at the checkpoint's time {format_ns(time_ns)} ({why})",
            object=name,
        )
    return place.find(
        "unknown-key",
        f"signed by key {key[:16]}…, which is not trusted for this stream "
        "(not a --public-key, nor reached from one by a signed rotation)",
        object=name,
    )


@dataclass
class KeysStored:
    """A key that signs checkpoints must be stored beside them (FORMAT.md section 9),
    even when --public-key supplied it: its deletion from the store is tampering. Given
    once per stream and key (`key-missing`)."""

    stored: set[str]
    reported: set[str] = field(default_factory=set)

    def check(self, place: Place, key: str, name: str) -> list[Finding]:
        if key in self.stored or key in self.reported:
            return []
        self.reported.add(key)
        return [
            place.find(
                "key-missing",
                f"key {key[:16]}… signs this checkpoint but {key_name(key)} is not stored "
                "(deleted from the store?)",
                object=name,
            )
        ]


def chains_to_previous(
    place: Place, cp: Checkpoint, name: str, expected: bytes | None
) -> list[Finding]:
    """`prev` is the digest of checkpoint index-1, or for index 0 the incoming digest
    (`checkpoint-chain-broken`); not judged when index-1 is missing or unusable
    (`expected` None)."""
    if expected is None or cp.prev == expected:
        return []
    what = f"checkpoint {cp.index - 1}"
    if cp.index == 0:
        what = "the last checkpoint of the previous epoch"
    return [
        place.find(
            "checkpoint-chain-broken",
            f"prev does not match {what} (replaced, removed or forked)",
            object=name,
        )
    ]


def follows(place: Place, before: Checkpoint, cp: Checkpoint, name: str) -> list[Finding]:
    """Nothing follows a close or an abandon (`checkpoint-after-close`); tree_size never
    decreases (`tree-shrank`); a heartbeat covers what the checkpoint before it covered
    (`heartbeat-grew`); time never decreases (`time-backwards`)."""
    found = []
    if before.closed:
        found.append(
            place.find("checkpoint-after-close", "stream continues after its close", object=name)
        )
    if cp.tree_size < before.tree_size:
        found.append(
            place.find("tree-shrank", f"tree size {cp.tree_size} < {before.tree_size}", object=name)
        )
    if cp.kind == "heartbeat" and cp.tree_size != before.tree_size:
        found.append(
            place.find(
                "heartbeat-grew",
                f"a heartbeat covers {cp.tree_size} events, the checkpoint before "
                f"it {before.tree_size}: new events need a seal",
                object=name,
            )
        )
    if cp.time_ns < before.time_ns:
        found.append(
            place.find("time-backwards", f"time {cp.time} is before {before.time}", object=name)
        )
    return found


def on_time(
    place: Place, before: Checkpoint, cp: Checkpoint, name: str, ctx: StreamContext
) -> list[Finding]:
    """The time between consecutive checkpoints is at most the earlier one's heartbeat
    plus the slack (`time-gap`), judged inside the --since/--until window. A longer gap
    before a `resume` is declared downtime (warning `restart`); the time before an
    `abandon` never is a gap (warnings `abandoned`, `abandoned-adopted`)."""
    opt = ctx.options
    since, until = opt.since_ns, opt.until_ns
    in_window = (since is None or cp.time_ns >= since) and (
        until is None or before.time_ns <= until
    )
    allowed_gap = before.heartbeat_ms * 1_000_000 + int(opt.slack_seconds * 1e9)
    late = in_window and cp.time_ns - before.time_ns > allowed_gap
    if cp.abandoned:
        return [
            WarningFinding(**dataclasses.asdict(note)) for note in abandon_notes(before, cp, name)
        ]
    if late and cp.kind == "resume":
        return [
            place.warn(
                "restart",
                f"writer restarted: no checkpoints from {before.time} to {cp.time}",
                object=name,
            )
        ]
    if late:
        gap_s = (cp.time_ns - before.time_ns) / 1e9
        return [
            place.find(
                "time-gap",
                f"no checkpoint from {before.time} to {cp.time} ({gap_s:.0f} s; the "
                f"writer promised one every {before.heartbeat_ms / 1000:g} s): "
                "checkpoints were deleted or the writer stalled",
                first_seq=before.tree_size,
                last_seq=max(cp.tree_size - 1, before.tree_size),
                object=name,
            )
        ]
    return []


@dataclass
class EpochCheckpoints:
    """The checkpoints of one epoch, checked in index order.

    `valid` are those that passed `readable_and_placed` and `signed_by_trusted_key`: the
    only ones the event checks use. `last_digest` (H(BODY) of the highest-index
    checkpoint that parses and sits under its name) is what the next epoch's genesis
    must chain to."""

    place: Place
    last_index: int  # the highest index listed
    incoming: bytes  # the digest index 0 must chain to
    allowed: StreamTrust | None  # what may sign the stream (None: not yet known)
    valid: list[SignedCheckpoint] = field(default_factory=list)
    last_digest: bytes = ZERO_HASH
    _digests: dict[int, bytes] = field(default_factory=dict)

    def check(
        self,
        ctx: StreamContext,
        trust: Trust,
        keys_stored: KeysStored,
        names: dict[int, str],
        index: int,
        loaded: SignedCheckpoint | Exception,
    ) -> list[Finding]:
        place, name = self.place, names[index]
        found = readable_and_placed(place, index, name, loaded)
        if found or isinstance(loaded, Exception):
            return found
        cp = loaded.checkpoint
        self._digests[index] = loaded.digest
        if index == self.last_index:
            self.last_digest = loaded.digest
        if self.allowed is None:  # no --public-key: the stream's first key decides
            self.allowed = trust.first_seen(cp.stream, cp.key_id, cp.time_ns)
        found = signed_by_trusted_key(place, loaded, name, self.allowed, trust)
        if found:
            return found
        found = keys_stored.check(place, cp.key_id, name)
        expected = self.incoming if index == 0 else self._digests.get(index - 1)
        found += chains_to_previous(place, cp, name, expected)
        if self.valid:
            before = self.valid[-1].checkpoint
            found += follows(place, before, cp, name)
            found += on_time(place, before, cp, name, ctx)
        ctx.object_time[name] = cp.time_ns
        self.valid.append(loaded)
        return found
