"""Closing a stream whose writer is gone for good (docs/FORMAT.md, "Abandoned streams").

A writer that dies without a clean shutdown leaves its newest epoch open, and `verify`
must call an open stream whose last checkpoint is old `stream-stale`: a truncated tail
looks exactly the same. When the operator knows the writer will never come back (its pod
is gone), it appends one checkpoint of kind `abandon` to the epoch, signed with the
policy's key: index = the newest checkpoint's index + 1, `prev` = that checkpoint's
digest. It names the checkpoint it saw, so deleting that checkpoint, anything before it,
or the abandon checkpoint itself is still a finding, and objects stored after it are
findings too (nothing may follow a closing checkpoint).

`abandon_stream` writes it; `abandon_notes` is what `verify` says about one.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Literal

from auditlock.ledger.certificate import decode_certificate
from auditlock.ledger.checkpoint import Checkpoint, encode_checkpoint
from auditlock.ledger.errors import FormatError, KeyFileError, SignatureError
from auditlock.ledger.keys import Signer, load_public_key, public_pem
from auditlock.ledger.keys import verify as verify_signature
from auditlock.ledger.limits import MAX_CERTIFICATE_BYTES
from auditlock.ledger.merkle import Frontier
from auditlock.ledger.names import checkpoint_name, key_name, parse_name
from auditlock.ledger.newest import list_stream, read_tip
from auditlock.ledger.report import Finding
from auditlock.ledger.resume import ResumeBroken, ResumePlan, adopt_segments
from auditlock.ledger.timestamps import format_ns
from auditlock.sinks.base import (
    Destination,
    DestinationError,
    ObjectConflict,
    ObjectNotFound,
    RetentionSpec,
)

Outcome = Literal[
    "abandoned",  # the abandon checkpoint is stored
    "already-closed",  # the newest checkpoint closes the epoch: nothing to do
    "moved-on",  # the newest checkpoint is not the one the caller saw: a writer is alive
    "raced",  # another object took the abandon checkpoint's name: a writer is alive
    "unusable",  # no valid newest checkpoint to close: left for verify to report
    "foreign-key",  # the stream is not signed by this key's lineage: not ours to close
]


@dataclass(frozen=True)
class AbandonResult:
    outcome: Outcome
    message: str
    checkpoint: str | None = None  # the abandon checkpoint's name, when stored
    named: str | None = None  # the newest checkpoint it names (or the one found)
    adopted: int = 0  # events stored after `named`, covered by the abandon checkpoint


def abandon_stream(
    destination: Destination,
    stream: str,
    signer: Signer,
    *,
    now_ns: int,
    retention: RetentionSpec | None,
    expect: str | None = None,
) -> AbandonResult:
    """Close `stream`'s newest epoch with an `abandon` checkpoint signed by `signer`.

    `expect` is the name of the newest checkpoint the caller saw when it decided the
    writer was gone; if the stream has moved on since, nothing is written. Segments
    stored after the newest checkpoint that chain on from its head (uploaded just
    before the writer died) are covered, as a writer's `resume` would cover them;
    segments after a gap are not (verify reports them). DestinationError other than a
    name conflict propagates (retry later)."""
    objects = list_stream(destination, stream)
    tip = read_tip(destination, objects)
    if tip is None:
        return AbandonResult("unusable", f"stream {stream} has no checkpoint")
    if tip.signed is None:
        return AbandonResult("unusable", f"{tip.name}: {tip.problem}", named=tip.name)
    if tip.newest_epoch != tip.epoch:
        return AbandonResult(
            "unusable",
            f"epoch {tip.newest_epoch} of stream {stream} has segments but no checkpoint",
            named=tip.name,
        )
    if expect is not None and tip.name != expect:
        return AbandonResult(
            "moved-on", f"stream {stream} has a newer checkpoint {tip.name}", named=tip.name
        )
    cp = tip.signed.checkpoint
    if cp.closed:
        return AbandonResult("already-closed", f"{tip.name} is a {cp.kind}", named=tip.name)
    if signer.key_id not in _successors(destination, cp.key_id) and not _certified_by(
        destination, signer, cp
    ):
        return AbandonResult(
            "foreign-key",
            f"{tip.name} is signed by key {cp.key_id[:16]}…, from which no rotation leads "
            f"to key {signer.key_id[:16]}…, and which that key did not certify",
            named=tip.name,
        )
    try:
        public = (
            signer.public
            if cp.key_id == signer.key_id
            else load_public_key(destination.get(key_name(cp.key_id)))
        )
        verify_signature(public, tip.signed.signature, tip.signed.body, tip.name)
    except (KeyFileError, ObjectNotFound, SignatureError) as exc:
        return AbandonResult("unusable", f"{tip.name}: {exc}", named=tip.name)

    plan = ResumePlan(
        epoch=cp.epoch,
        need_genesis=False,
        frontier=Frontier(cp.tree_size, cp.frontier),
        head=cp.head,
    )
    # Cover what chains on up to the first break; verify reports the rest.
    with contextlib.suppress(ResumeBroken, FormatError, ObjectNotFound):
        adopt_segments(destination, plan, objects.segments.get(cp.epoch, []), stream)
    abandon = Checkpoint(
        stream=stream,
        epoch=cp.epoch,
        index=cp.index + 1,
        kind="abandon",
        prev=tip.signed.digest,
        tree_size=plan.frontier.size,
        root=plan.frontier.root(),
        head=plan.head,
        frontier=tuple(plan.frontier.nodes),
        # Never before the checkpoint it closes, whatever the operator's clock says.
        time=format_ns(max(now_ns, cp.time_ns)),
        heartbeat_ms=cp.heartbeat_ms,
        key_id=signer.key_id,
    )
    name = checkpoint_name(stream, cp.epoch, abandon.index)
    data, _ = encode_checkpoint(abandon, signer)
    destination.put(key_name(signer.key_id), public_pem(signer.public), retention)
    try:
        destination.put(name, data, retention)
    except ObjectConflict:
        return AbandonResult(
            "raced", f"{name} was written by someone else (the writer is alive)", named=tip.name
        )
    adopted = plan.frontier.size - cp.tree_size
    return AbandonResult(
        "abandoned",
        f"closed epoch {cp.epoch} of stream {stream} after {tip.name} "
        f"({plan.frontier.size} events{f', {adopted} adopted' if adopted else ''})",
        checkpoint=name,
        named=tip.name,
        adopted=adopted,
    )


def _certified_by(destination: Destination, signer: Signer, cp: Checkpoint) -> bool:
    """A per-pod key's stream may be closed by the root that certified that key for that
    stream (FORMAT.md section 9): a stored certificate of `cp`'s key, issued by `signer`
    (or a key from which a rotation leads to it), that verifies when `signer` issued it."""
    for name in destination.list(f"keys/certs/{cp.key_id}-"):
        try:
            cert = decode_certificate(destination.get(name, MAX_CERTIFICATE_BYTES))
            if cert.issuer_key_id == signer.key_id:
                cert.verify_with(signer.public)
            elif signer.key_id not in _successors(destination, cert.issuer_key_id):
                continue
        except (FormatError, SignatureError, DestinationError):
            continue
        if cert.key_id == cp.key_id and cert.subject.stream == cp.stream:
            return True
    return False


def _successors(destination: Destination, start: str) -> set[str]:
    """Key ids reachable from `start` through stored rotation records (by name: verify
    checks each record's signature)."""
    edges: dict[str, set[str]] = {}
    for name in destination.list("keys/rotations/"):
        parsed = parse_name(name)
        if parsed is not None and parsed.kind == "rotation":
            edges.setdefault(parsed.old_key_id, set()).add(parsed.key_id)
    seen = {start}
    queue = deque([start])
    while queue:
        for following in edges.get(queue.popleft(), ()):
            if following not in seen:
                seen.add(following)
                queue.append(following)
    return seen


def abandon_notes(before: Checkpoint, abandon: Checkpoint, name: str) -> list[Finding]:
    """The warnings `verify` gives for a valid abandon checkpoint `name` after `before`.
    The silence before it is declared (the writer died, the operator waited out its
    grace delay), so it is not a `time-gap`; events it covers that no writer's
    checkpoint covered were adopted by the operator, and are named."""
    notes = [
        Finding(
            "abandoned",
            f"writer gone: its last checkpoint ({before.index}) is from {before.time}; the "
            f"epoch was closed as abandoned at {abandon.time} by key {abandon.key_id[:16]}…",
            stream=abandon.stream,
            epoch=abandon.epoch,
            object=name,
        )
    ]
    if abandon.tree_size > before.tree_size:
        notes.append(
            Finding(
                "abandoned-adopted",
                "stored by the writer after its last checkpoint; covered only by the "
                "abandon checkpoint",
                first_seq=before.tree_size,
                last_seq=abandon.tree_size - 1,
                stream=abandon.stream,
                epoch=abandon.epoch,
                object=name,
            )
        )
    return notes
