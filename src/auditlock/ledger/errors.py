"""Typed ledger errors. Each carries the precise reason, so a caller can name what failed."""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error raised by auditlock.ledger."""


# What kind of rule the first problem of an EventError broke: a closed set, used as the
# collector's metric label (`events_rejected_total{reason}`). The reason text is for people.
MISSING_FIELD = "missing_field"  # a required member is absent (or null)
BAD_TYPE = "bad_type"  # a value of a type JSON events cannot hold
BAD_VALUE = "bad_value"  # the right type, a value the format refuses
INVALID_UTF8 = "invalid_utf8"  # text that has no UTF-8 form (a lone surrogate)
PROBLEM_CODES = (MISSING_FIELD, BAD_TYPE, BAD_VALUE, INVALID_UTF8)


class EventError(LedgerError, ValueError):
    """An event failed intake validation.

    `problems` lists (field path, reason) pairs, e.g. ("actor.ip", "not an IP address");
    the path uses dots for object members and [i] for array items. `code` says which kind
    of rule the first one broke (one of PROBLEM_CODES).
    """

    def __init__(self, problems: list[tuple[str, str]], code: str = BAD_VALUE) -> None:
        self.problems = problems
        self.code = code
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
