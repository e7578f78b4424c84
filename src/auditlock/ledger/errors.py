"""Typed ledger errors. Each carries the precise reason, so a caller can name what failed."""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error raised by auditlock.ledger."""


class EventError(LedgerError, ValueError):
    """An event failed intake validation.

    `problems` lists (field path, reason) pairs, e.g. ("actor.ip", "not an IP address");
    the path uses dots for object members and [i] for array items.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path or '<event>'}: {reason}" for path, reason in problems))


class FormatError(LedgerError):
    """A stored object does not follow docs/FORMAT.md (corrupt, truncated, unknown version)."""


class KeyFileError(LedgerError):
    """A key file is missing, not PEM, or not an Ed25519 key of the expected kind."""


class SignatureError(LedgerError):
    """A signature does not verify under the named key."""


class ProofError(LedgerError):
    """An inclusion or consistency proof does not verify; the message says which step."""


class StoreError(LedgerError):
    """Storing a sealed batch failed in a way the caller should retry (see StreamWriter.store)."""
