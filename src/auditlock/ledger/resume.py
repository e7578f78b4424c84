"""Where a restarted writer goes on (docs/FORMAT.md, "Writing and resuming").

`plan_resume` reads a stream's objects from the destination and decides:

* nothing stored: epoch 0, genesis checkpoint with prev = 32 zero bytes;
* the newest epoch's last checkpoint is readable, signed by us if it names our key, and not
  a close: CONTINUE it, adopting segments stored after it that chain on from its head;
  segments found after a gap are reserved (the writer re-creates them byte for byte);
* the newest epoch has segments but no checkpoint yet (its genesis was lost in a crash):
  continue it with a fresh genesis, adopting its segments the same way;
* otherwise (closed, unreadable, inconsistent): a NEW epoch whose genesis commits to the
  digest of the newest checkpoint body there is.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from auditlock.ledger.checkpoint import SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import FormatError, SignatureError
from auditlock.ledger.keys import Signer, verify
from auditlock.ledger.lines import ZERO_HASH, LineFormat, claimed_prev, event_hash
from auditlock.ledger.merkle import Frontier
from auditlock.ledger.names import ObjectName
from auditlock.ledger.newest import list_stream
from auditlock.ledger.segment import decode_segment
from auditlock.sinks.base import Destination, DestinationError

log = logging.getLogger(__name__)


@dataclass
class ResumePlan:
    epoch: int
    need_genesis: bool
    frontier: Frontier = field(default_factory=Frontier)
    head: bytes = ZERO_HASH
    checkpoint_index: int = -1
    checkpoint_digest: bytes = ZERO_HASH
    checkpoint_time_ns: int = 0
    adopted: int = 0
    reserved: list[tuple[int, int]] = field(default_factory=list)
    previous_key_id: str = ""


class ResumeBroken(Exception):
    """The tail cannot be continued; the message says why (logged)."""


class _Closed(ResumeBroken):
    """The newest epoch ended with a close checkpoint: the normal way to a new epoch."""


def plan_resume(destination: Destination, stream: str, signer: Signer) -> ResumePlan:
    objects = list_stream(destination, stream)
    checkpoints, segments = objects.checkpoints, objects.segments
    epoch = objects.newest_epoch
    if epoch is None:
        return ResumePlan(epoch=0, need_genesis=True)
    previous_digest = _last_digest(destination, checkpoints, epoch)
    try:
        if epoch not in checkpoints:
            plan = ResumePlan(epoch=epoch, need_genesis=True, checkpoint_digest=previous_digest)
        else:
            plan = _continue_from(destination, checkpoints[epoch], epoch, stream, signer)
        adopt_segments(destination, plan, segments.get(epoch, []), stream)
        return plan
    except (ResumeBroken, FormatError, SignatureError, DestinationError) as exc:
        digest = _last_digest(destination, checkpoints, epoch + 1)
        level = logging.INFO if isinstance(exc, _Closed) else logging.WARNING
        log.log(level, "stream %s: starting epoch %d: %s", stream, epoch + 1, exc)
        return ResumePlan(epoch=epoch + 1, need_genesis=True, checkpoint_digest=digest)


def _last_digest(
    destination: Destination, checkpoints: dict[int, dict[int, str]], below: int
) -> bytes:
    """Digest of the body of the newest checkpoint in epochs < below (zeros if none)."""
    earlier = [e for e in checkpoints if e < below]
    if not earlier:
        return ZERO_HASH
    by_index = checkpoints[max(earlier)]
    data = destination.get(by_index[max(by_index)])
    return hashlib.sha256(data.split(b"\n", 1)[0]).digest()


def _continue_from(
    destination: Destination, by_index: dict[int, str], epoch: int, stream: str, signer: Signer
) -> ResumePlan:
    last = max(by_index)
    signed: SignedCheckpoint = decode_checkpoint(destination.get(by_index[last]))
    cp = signed.checkpoint
    if cp.stream != stream or cp.epoch != epoch or cp.index != last:
        raise ResumeBroken(f"checkpoint {by_index[last]} does not match its name")
    if cp.key_id == signer.key_id:
        verify(signer.public, signed.signature, signed.body, by_index[last])
    if cp.closed:
        raise _Closed(f"epoch {epoch} was closed")
    return ResumePlan(
        epoch=epoch,
        need_genesis=False,
        frontier=Frontier(cp.tree_size, cp.frontier),
        head=cp.head,
        checkpoint_index=cp.index,
        checkpoint_digest=signed.digest,
        checkpoint_time_ns=cp.time_ns,
        previous_key_id=cp.key_id,
    )


def adopt_segments(
    destination: Destination, plan: ResumePlan, segs: list[ObjectName], stream: str
) -> None:
    """Extend the plan with stored segments that chain on from its head; segments after
    a gap go to `plan.reserved`. Raises `ResumeBroken` at the first segment that
    overlaps or does not chain on (what came before it stays adopted)."""
    envelope = LineFormat(stream.encode(), plan.epoch)
    for seg in sorted(segs, key=lambda s: s.first):
        size = plan.frontier.size
        if seg.last < size:
            continue  # covered by the checkpoint
        if seg.first < size or (plan.reserved and seg.first <= plan.reserved[-1][1]):
            raise ResumeBroken(f"segment {seg.name} overlaps events already stored")
        if seg.first > size or plan.reserved:
            _check_orphan(destination, seg, envelope)
            plan.reserved.append((seg.first, seg.last))
            continue
        lines = decode_segment(destination.get(seg.name), compressed=seg.compressed)
        if len(lines) != seg.last - seg.first + 1:
            raise ResumeBroken(f"segment {seg.name} holds {len(lines)} lines")
        prev = plan.head if size else ZERO_HASH
        leaves = []
        for offset, line in enumerate(lines):
            if not envelope.fits(line, size + offset, prev):
                raise ResumeBroken(f"segment {seg.name} line {offset} does not chain on")
            prev = event_hash(line)
            leaves.append(prev)
        plan.frontier.extend(leaves)
        plan.head = prev
        plan.adopted += len(lines)


def _check_orphan(destination: Destination, seg: ObjectName, envelope: LineFormat) -> None:
    """A segment after a gap is kept (and later re-created) only if it is whole and
    chains within itself: the writer will hold re-fed events back to match it."""
    lines = decode_segment(destination.get(seg.name), compressed=seg.compressed)
    if len(lines) != seg.last - seg.first + 1:
        raise ResumeBroken(f"segment {seg.name} holds {len(lines)} lines")
    prev: bytes | None = None
    for offset, line in enumerate(lines):
        if prev is None:
            prev = claimed_prev(line)
            if prev is None:
                raise ResumeBroken(f"segment {seg.name} line {offset} is malformed")
        if not envelope.fits(line, seg.first + offset, prev):
            raise ResumeBroken(f"segment {seg.name} line {offset} does not chain on")
        prev = event_hash(line)
