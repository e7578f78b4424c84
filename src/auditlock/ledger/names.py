"""Object names (docs/FORMAT.md, "Objects"). Deterministic, so a retried put is idempotent.

    keys/<key-id>.pub                                   PEM public key
    keys/rotations/<old-key-id>-<new-key-id>.json       rotation record, signed by the old key
    keys/certs/<key-id>-<serial:06>.json                certificate record, signed by a root key
    keys/claims/<pod-uid>-<container:32>.json           which key a collector container claimed
    streams/<stream>/<epoch:06>/ckpt-<index:012>.ckpt   signed checkpoint
    streams/<stream>/<epoch:06>/seg-<first:012>-<last:012>.jsonl[.gz]   event lines

Zero padding makes the store's lexical listing order the numeric order, so one `list` of
`streams/` gives a verifier every epoch, segment and checkpoint already sorted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STREAM_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_STREAM = re.compile(STREAM_PATTERN + r"\Z")
_KEY_ID = r"[0-9a-f]{64}"
MAX_EPOCH = 999_999
MAX_SEQ = 999_999_999_999

_PARSE = re.compile(
    r"streams/(?P<stream>" + STREAM_PATTERN + r")/(?P<epoch>\d{6})/"
    r"(?:ckpt-(?P<index>\d{12})\.ckpt|seg-(?P<first>\d{12})-(?P<last>\d{12})\.jsonl(?P<gz>\.gz)?)\Z"
)
_KEY = re.compile(r"keys/(?P<key>" + _KEY_ID + r")\.pub\Z")
_CERTIFICATE = re.compile(r"keys/certs/(?P<key>" + _KEY_ID + r")-(?P<serial>\d{6})\.json\Z")
_CLAIM = re.compile(r"keys/claims/(?P<uid>[A-Za-z0-9-]{1,128})-(?P<container>[0-9a-f]{32})\.json\Z")
_ROTATION = re.compile(
    r"keys/rotations/(?P<old>" + _KEY_ID + r")-(?P<new>" + _KEY_ID + r")\.json\Z"
)


def check_stream_id(stream: str) -> str:
    if not _STREAM.match(stream):
        raise ValueError(
            f"stream id {stream[:80]!r} must match {STREAM_PATTERN} "
            "(letters, digits, '.', '_', '-'; at most 200 characters)"
        )
    return stream


def key_name(key_id: str) -> str:
    return f"keys/{key_id}.pub"


def rotation_name(old_key_id: str, new_key_id: str) -> str:
    return f"keys/rotations/{old_key_id}-{new_key_id}.json"


def certificate_name(key_id: str, serial: int) -> str:
    return f"keys/certs/{key_id}-{serial:06d}.json"


def claim_name(pod_uid: str, container: str) -> str:
    """`container`: 32 hex digits naming one container instance (a hash of its id)."""
    return f"keys/claims/{pod_uid}-{container}.json"


def stream_prefix(stream: str) -> str:
    return f"streams/{stream}/"


def checkpoint_name(stream: str, epoch: int, index: int) -> str:
    return f"streams/{stream}/{epoch:06d}/ckpt-{index:012d}.ckpt"


def segment_name(stream: str, epoch: int, first: int, last: int, *, compressed: bool) -> str:
    suffix = ".jsonl.gz" if compressed else ".jsonl"
    return f"streams/{stream}/{epoch:06d}/seg-{first:012d}-{last:012d}{suffix}"


@dataclass(frozen=True)
class ObjectName:
    """What a ledger object name says about its object."""

    name: str
    kind: str  # "checkpoint", "segment", "key", "rotation", "certificate", "claim"
    stream: str = ""
    epoch: int = 0
    index: int = 0  # checkpoints; the serial of a certificate
    first: int = 0  # segments
    last: int = 0
    compressed: bool = False
    key_id: str = ""  # keys; the new key of a rotation
    old_key_id: str = ""  # rotations


def parse_name(name: str) -> ObjectName | None:
    """Parse a ledger object name; None if the name is not one FORMAT.md defines."""
    m = _PARSE.match(name)
    if m:
        stream, epoch = m["stream"], int(m["epoch"])
        if m["index"] is not None:
            return ObjectName(name, "checkpoint", stream, epoch, index=int(m["index"]))
        return ObjectName(
            name, "segment", stream, epoch,
            first=int(m["first"]), last=int(m["last"]), compressed=m["gz"] is not None,
        )  # fmt: skip
    m = _KEY.match(name)
    if m:
        return ObjectName(name, "key", key_id=m["key"])
    m = _ROTATION.match(name)
    if m:
        return ObjectName(name, "rotation", key_id=m["new"], old_key_id=m["old"])
    m = _CERTIFICATE.match(name)
    if m:
        return ObjectName(name, "certificate", key_id=m["key"], index=int(m["serial"]))
    m = _CLAIM.match(name)
    if m:
        return ObjectName(name, "claim")
    return None
