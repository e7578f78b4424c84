"""The ledger: canonical events, hash chains, Merkle segments, signed checkpoints.

docs/FORMAT.md is the specification; the modules follow it section by section:
values/event/normalize (Events), canonical (canonical bytes), lines (Lines and the hash
chain), merkle (Merkle trees), segment (Segments), checkpoint (Checkpoints), keys and
rotation (Keys), names and newest (Objects; a stream's newest checkpoint), writer/resume
(Writing and resuming), abandon (closing a stream whose writer is gone), verify (the
verification algorithm), proof (inclusion proofs).

The names below are exported lazily (PEP 562 module `__getattr__`): importing one
submodule, e.g. `auditlock.ledger.canonical` in the sidecar, does not import the others
(the pydantic event model, the verifier, ...), which keeps the sidecar's memory small.
`from auditlock.ledger import X` works for every name below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy exports resolve to, for type checkers and readers
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

# exported name -> (module, attribute in that module)
_EXPORTS: dict[str, tuple[str, str]] = {
    "AuditEvent": ("auditlock.ledger.event", "AuditEvent"),
    "Checkpoint": ("auditlock.ledger.checkpoint", "Checkpoint"),
    "ClosedStreamError": ("auditlock.ledger.writer", "ClosedStreamError"),
    "EventError": ("auditlock.ledger.errors", "EventError"),
    "Finding": ("auditlock.ledger.report", "Finding"),
    "FormatError": ("auditlock.ledger.errors", "FormatError"),
    "KeyFileError": ("auditlock.ledger.errors", "KeyFileError"),
    "LedgerError": ("auditlock.ledger.errors", "LedgerError"),
    "PendingObject": ("auditlock.ledger.writer", "PendingObject"),
    "ProofError": ("auditlock.ledger.errors", "ProofError"),
    "RetentionSpec": ("auditlock.sinks.base", "RetentionSpec"),
    "SignatureError": ("auditlock.ledger.errors", "SignatureError"),
    "SignedCheckpoint": ("auditlock.ledger.checkpoint", "SignedCheckpoint"),
    "Signer": ("auditlock.ledger.keys", "Signer"),
    "StoreError": ("auditlock.ledger.errors", "StoreError"),
    "StreamSummary": ("auditlock.ledger.report", "StreamSummary"),
    "StreamWriter": ("auditlock.ledger.writer", "StreamWriter"),
    "VerifyOptions": ("auditlock.ledger.verify", "VerifyOptions"),
    "VerifyReport": ("auditlock.ledger.report", "VerifyReport"),
    "build_proof": ("auditlock.ledger.proof", "build_proof"),
    "canonical_bytes": ("auditlock.ledger.canonical", "canonical_bytes"),
    "check_proof": ("auditlock.ledger.proof", "check_proof"),
    "decode_checkpoint": ("auditlock.ledger.checkpoint", "decode_checkpoint"),
    "event_json_schema": ("auditlock.ledger.event", "event_json_schema"),
    "key_id": ("auditlock.ledger.keys", "key_id"),
    "load_private_key": ("auditlock.ledger.keys", "load_private_key"),
    "load_public_key": ("auditlock.ledger.keys", "load_public_key"),
    "normalize_event": ("auditlock.ledger.normalize", "normalize_event"),
    "validate_event": ("auditlock.ledger.event", "validate_event"),
    "verify_ledger": ("auditlock.ledger.verify", "verify"),
}

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


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value  # next lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
