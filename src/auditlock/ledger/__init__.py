"""The ledger: canonical events, hash chains, Merkle segments, signed checkpoints.

docs/FORMAT.md is the specification; the modules follow it section by section:
values/event/normalize (Events), canonical (canonical bytes), lines (Lines and the hash
chain), merkle (Merkle trees), segment (Segments), checkpoint (Checkpoints), keys and
rotation (Keys), names (Objects), writer/resume (Writing and resuming), verify (the
verification algorithm), proof (inclusion proofs).
"""

from auditlock.ledger.canonical import canonical_bytes
from auditlock.ledger.checkpoint import Checkpoint, SignedCheckpoint, decode_checkpoint
from auditlock.ledger.errors import (
    EventError,
    FormatError,
    KeyFileError,
    LedgerError,
    ProofError,
    SignatureError,
    StoreError,
)
from auditlock.ledger.event import AuditEvent, event_json_schema, validate_event
from auditlock.ledger.keys import Signer, key_id, load_private_key, load_public_key
from auditlock.ledger.normalize import normalize_event
from auditlock.ledger.proof import build_proof, check_proof
from auditlock.ledger.report import Finding, StreamSummary, VerifyReport
from auditlock.ledger.verify import VerifyOptions
from auditlock.ledger.verify import verify as verify_ledger
from auditlock.ledger.writer import ClosedStreamError, PendingObject, StreamWriter
from auditlock.sinks.base import RetentionSpec

__all__ = [
    "AuditEvent",
    "Checkpoint",
    "ClosedStreamError",
    "EventError",
    "Finding",
    "FormatError",
    "KeyFileError",
    "LedgerError",
    "PendingObject",
    "ProofError",
    "RetentionSpec",
    "SignatureError",
    "SignedCheckpoint",
    "Signer",
    "StoreError",
    "StreamSummary",
    "StreamWriter",
    "VerifyOptions",
    "VerifyReport",
    "build_proof",
    "canonical_bytes",
    "check_proof",
    "decode_checkpoint",
    "event_json_schema",
    "key_id",
    "load_private_key",
    "load_public_key",
    "normalize_event",
    "validate_event",
    "verify_ledger",
]
