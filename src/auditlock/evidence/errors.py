"""The one error of evidence handling: a code (named in docs/review.md) and a message."""

from __future__ import annotations


class EvidenceError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
