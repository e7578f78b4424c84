"""The signed checkpoints of a trail, for the cadence plot and evidence packages.

The events table holds events only; checkpoints are read from the store again (one small
object each, read in parallel from remote stores). Only checkpoints of the streams the
verification reported, whose signature verifies under a key that verification accepted
for that stream, are kept: the report shows nothing that verification did not vouch for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.checkpoint import SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import FormatError, KeyFileError, SignatureError
from auditlock.ledger.fetch import prefetch
from auditlock.ledger.keys import key_id, load_public_key, verify
from auditlock.ledger.limits import MAX_CHECKPOINT_BYTES, MAX_KEY_BYTES
from auditlock.ledger.names import key_name, parse_name
from auditlock.report.model import CheckpointTrack
from auditlock.sinks.base import Destination, DestinationError

READ_THREADS = 8


@dataclass(frozen=True)
class StoredCheckpoint:
    name: str
    data: bytes  # the object's bytes, as stored
    signed: SignedCheckpoint


def signed_checkpoints(
    destination: Destination, report: dict[str, Any], anchors: Iterable[Ed25519PublicKey] = ()
) -> list[StoredCheckpoint]:
    """Every checkpoint of the verified streams signed by a key verification accepted for
    its stream, in (stream, epoch, index) order."""
    accepted = {str(s["stream"]): set(s.get("key_ids") or []) for s in report.get("streams", [])}
    keys = {key_id(k): k for k in anchors}
    trusted: set[str] = set().union(*accepted.values()) if accepted else set()
    for wanted in sorted(trusted - set(keys)):
        try:
            stored = load_public_key(destination.get(key_name(wanted), MAX_KEY_BYTES))
        except (KeyFileError, DestinationError):
            continue
        if key_id(stored) == wanted:
            keys[wanted] = stored
    names = []
    for name in destination.list("streams/"):
        parsed = parse_name(name)
        if parsed is not None and parsed.kind == "checkpoint" and parsed.stream in accepted:
            names.append(name)
    workers = 0 if destination.url.startswith("file:") else READ_THREADS

    def read(name: str) -> bytes:
        return destination.get(name, MAX_CHECKPOINT_BYTES)

    kept = []
    for name, data in prefetch(read, names, workers=workers):
        if isinstance(data, Exception):
            continue
        parsed = parse_name(name)
        try:
            signed = decode_checkpoint(data)
        except FormatError:
            continue
        cp = signed.checkpoint
        key = keys.get(cp.key_id)
        if (
            parsed is None
            or key is None
            or cp.key_id not in accepted.get(cp.stream, set())
            or (cp.stream, cp.epoch, cp.index) != (parsed.stream, parsed.epoch, parsed.index)
        ):
            continue
        try:
            verify(key, signed.signature, signed.body, "checkpoint")
        except SignatureError:
            continue
        kept.append(StoredCheckpoint(name, data, signed))
    kept.sort(key=lambda c: (c.signed.checkpoint.stream, c.signed.checkpoint.epoch,
                             c.signed.checkpoint.index))  # fmt: skip
    return kept


def tracks(
    checkpoints: Iterable[StoredCheckpoint], since_ns: int | None, until_ns: int | None
) -> list[CheckpointTrack]:
    """Per stream, the checkpoint times inside the period (epochs run one after another)."""
    times: dict[str, list[int]] = {}
    heartbeat: dict[str, int] = {}
    for c in checkpoints:
        cp = c.signed.checkpoint
        t = cp.time_ns
        if (since_ns is not None and t < since_ns) or (until_ns is not None and t >= until_ns):
            continue
        times.setdefault(cp.stream, []).append(t)
        heartbeat[cp.stream] = max(heartbeat.get(cp.stream, 0), cp.heartbeat_ms)
    return [
        CheckpointTrack(stream, tuple(sorted(ts)), heartbeat[stream])
        for stream, ts in sorted(times.items())
    ]
