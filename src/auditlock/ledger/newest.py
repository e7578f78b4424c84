"""A stream's newest checkpoint, read from the store (docs/FORMAT.md, "Objects").

One listing (of `streams/<stream>/`, or of `streams/` for every stream at once) and one
read per stream. Names sort numerically (FORMAT.md section 2), so the newest checkpoint
is the highest index of the highest epoch that has one. Used by a restarted writer
(`resume`), by the operator's LAST-CHECKPOINT column and its closing of streams whose
writer is gone (`abandon`), and by anything that watches streams on a timer.

Reading is not verifying: the tip says whether its object decodes and sits under its
own name; checking its signature against keys the caller trusts is the caller's step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from auditlock.ledger.checkpoint import SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import FormatError
from auditlock.ledger.fetch import prefetch
from auditlock.ledger.names import ObjectName, parse_name, stream_prefix
from auditlock.sinks.base import Destination, ObjectNotFound

STREAMS_PREFIX = "streams/"


@dataclass
class StreamObjects:
    """What one listing says about one stream: checkpoint names and segments by epoch."""

    stream: str
    checkpoints: dict[int, dict[int, str]] = field(default_factory=dict)  # epoch -> index -> name
    segments: dict[int, list[ObjectName]] = field(default_factory=dict)

    def add(self, parsed: ObjectName) -> None:
        if parsed.kind == "checkpoint":
            self.checkpoints.setdefault(parsed.epoch, {})[parsed.index] = parsed.name
        elif parsed.kind == "segment":
            self.segments.setdefault(parsed.epoch, []).append(parsed)

    @property
    def newest_epoch(self) -> int | None:
        """The highest epoch holding any object (it may have segments only)."""
        epochs = set(self.checkpoints) | set(self.segments)
        return max(epochs) if epochs else None

    def newest_checkpoint_name(self) -> tuple[int, int, str] | None:
        """(epoch, index, name) of the highest checkpoint name, or None."""
        if not self.checkpoints:
            return None
        epoch = max(self.checkpoints)
        index = max(self.checkpoints[epoch])
        return epoch, index, self.checkpoints[epoch][index]


@dataclass(frozen=True)
class StreamTip:
    """The newest checkpoint of a stream as stored. `signed` is None when the object
    cannot be used (unreadable, corrupt, or not the checkpoint its name says), and
    `problem` says why."""

    stream: str
    epoch: int
    index: int
    name: str
    signed: SignedCheckpoint | None
    problem: str = ""
    newest_epoch: int = 0  # higher than `epoch` when a newer epoch has segments only

    @property
    def digest(self) -> bytes | None:
        return self.signed.digest if self.signed is not None else None


def group_streams(names: Iterable[str], *, limit: int | None = None) -> dict[str, StreamObjects]:
    """Group listed object names by stream; names that are not stream objects are
    skipped. `limit` bounds how many names are read (a bound on memory and time for a
    huge store: beyond it, later streams are missed)."""
    streams: dict[str, StreamObjects] = {}
    for count, name in enumerate(names):
        if limit is not None and count >= limit:
            break
        parsed = parse_name(name)
        if parsed is None or parsed.kind not in ("checkpoint", "segment"):
            continue
        objects = streams.get(parsed.stream)
        if objects is None:
            objects = streams[parsed.stream] = StreamObjects(parsed.stream)
        objects.add(parsed)
    return streams


def list_stream(destination: Destination, stream: str) -> StreamObjects:
    """The objects of one stream (one listing of `streams/<stream>/`)."""
    grouped = group_streams(destination.list(stream_prefix(stream)))
    return grouped.get(stream, StreamObjects(stream))


def read_tip(destination: Destination, objects: StreamObjects) -> StreamTip | None:
    """Read the newest checkpoint named in `objects`; None if it names none.
    DestinationError other than a vanished object propagates (retry later)."""
    newest = objects.newest_checkpoint_name()
    if newest is None:
        return None
    epoch, index, name = newest

    def tip(signed: SignedCheckpoint | None, problem: str = "") -> StreamTip:
        newest_epoch = objects.newest_epoch or epoch
        return StreamTip(objects.stream, epoch, index, name, signed, problem, newest_epoch)

    try:
        signed = decode_checkpoint(destination.get(name))
    except ObjectNotFound:
        return tip(None, "listed but no longer readable")
    except FormatError as exc:
        return tip(None, str(exc))
    cp = signed.checkpoint
    if (cp.stream, cp.epoch, cp.index) != (objects.stream, epoch, index):
        return tip(
            None,
            f"holds checkpoint {cp.index} of stream {cp.stream} epoch {cp.epoch}, not the "
            "one its name says",
        )
    return tip(signed)


def newest_checkpoint(destination: Destination, stream: str) -> StreamTip | None:
    """The newest checkpoint of one stream, or None if it has none."""
    return read_tip(destination, list_stream(destination, stream))


def newest_checkpoints(
    destination: Destination, *, limit: int | None = None, workers: int = 0
) -> dict[str, StreamTip]:
    """The newest checkpoint of every stream, from one listing of `streams/`. With
    `workers`, that many reads are in flight at once (remote stores: one round trip per
    stream would make a reading of 1,000 streams take tens of seconds)."""
    grouped = group_streams(destination.list(STREAMS_PREFIX), limit=limit)
    tips: dict[str, StreamTip] = {}
    for objects, tip in prefetch(
        lambda objects: read_tip(destination, objects), grouped.values(), workers=workers
    ):
        if isinstance(tip, Exception):
            raise tip
        if tip is not None:
            tips[objects.stream] = tip
    return tips
