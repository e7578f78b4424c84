"""The one destination interface every sink implements.

A destination is a WORM-ish object store addressed by URL (`gs://`, `s3://`, `file://`).
The interface is synchronous on purpose: the official client libraries (boto3,
google-cloud-storage) are blocking, so callers in an event loop run these methods in a
thread pool (`asyncio.to_thread` or an executor) and may keep several uploads in flight.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


class LockMode(enum.StrEnum):
    """How strongly an object's retention is held.

    LOCKED can never be shortened or removed before it expires (GCS `Locked`,
    S3 `COMPLIANCE`). UNLOCKED can be lifted by a privileged identity (GCS `Unlocked`,
    S3 `GOVERNANCE`).
    """

    LOCKED = "Locked"
    UNLOCKED = "Unlocked"


@dataclass(frozen=True)
class RetentionSpec:
    """What a writer asks for: keep every object for `period` after it is written."""

    period: timedelta
    mode: LockMode = LockMode.LOCKED
    legal_hold: bool = False

    def retain_until(self, written_at: datetime) -> datetime:
        """`written_at + period`, rounded *up* to a whole second: S3 and GCS keep
        retain-until dates in whole seconds, and a lock must never end before it was
        promised to."""
        until = written_at + self.period
        if until.microsecond:
            until = until.replace(microsecond=0) + timedelta(seconds=1)
        return until


@dataclass(frozen=True)
class ObjectRetention:
    """What a store reports about one stored object."""

    mode: LockMode | None
    retain_until: datetime | None
    legal_hold: bool = False
    # When the store says the object was written (S3 LastModified, GCS timeCreated), so a
    # verifier can judge "locked for N days after it was written" for objects that carry
    # no signed time of their own (public keys, rotation records).
    written_at: datetime | None = None


@dataclass(frozen=True)
class PutResult:
    name: str
    size: int
    created: bool  # False when an identical object was already there (idempotent retry)
    retention: ObjectRetention | None


@dataclass
class CheckReport:
    """A destination's configuration, read back and judged against a retention spec."""

    url: str
    ok: bool
    worm: bool
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # each a sentence; any makes ok False
    notices: list[str] = field(default_factory=list)  # worth saying, but not a failure

    def summary(self) -> str:
        notes = "".join(" " + n for n in self.notices)
        if self.ok:
            return f"{self.url}: PASS" + (f" ({notes.strip()})" if notes else "")
        return f"{self.url}: FAIL: " + " ".join(self.problems) + notes


class DestinationError(Exception):
    """A permanent failure talking to a destination; the message says what to do next."""


class ObjectNotFound(DestinationError):
    pass


class ObjectUnreadable(DestinationError):
    """The object exists but is not read: larger than the reader allows (`get(max_bytes=)`),
    or, on file://, not a regular file inside the directory (a symlink, FIFO, device)."""


class ObjectConflict(DestinationError):
    """An object of that name exists with different bytes. Never overwritten."""


def same_bytes_or_conflict(where: str, stored: bytes, offered: bytes) -> None:
    """Storing an object again is an idempotent retry only with the bytes it holds; other
    bytes are an ObjectConflict (`where` names the object)."""
    if stored != offered:
        raise ObjectConflict(
            f"{where} already exists with different bytes ({len(stored)} stored, "
            f"{len(offered)} offered); refusing to overwrite - this is a bug or tampering"
        )


class TransientError(DestinationError):
    """A failure worth retrying (throttling, 5xx, timeouts) that outlived its retries."""


class Destination(ABC):
    """A place to keep ledger objects under a retention lock."""

    url: str

    @abstractmethod
    def put(self, name: str, data: bytes, retention: RetentionSpec | None) -> PutResult:
        """Store `data` as `name` under `retention`.

        Idempotent: the same name with the same bytes succeeds without a second copy.
        The same name with different bytes raises ObjectConflict and changes nothing.
        """

    @abstractmethod
    def get(self, name: str, max_bytes: int | None = None) -> bytes:
        """Read a whole object; raises ObjectNotFound. With `max_bytes`, an object larger
        than that raises ObjectUnreadable after reading at most max_bytes + 1 bytes (a
        reader facing a hostile store never holds more than it is prepared to)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Object names under `prefix` (relative to the URL's prefix), in sorted order."""

    @abstractmethod
    def retention(self, name: str) -> ObjectRetention:
        """The retention state the store reports for one object."""

    @abstractmethod
    def check(self, required: RetentionSpec) -> CheckReport:
        """Read the destination's configuration and judge it against `required`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
