"""What every verification step may use: the options, and how to read the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.sinks.base import Destination

DEFAULT_SLACK_SECONDS = 30.0
READ_THREADS = 8  # reads in flight against remote stores (S3, GCS)

# (stream, epoch, first seq, lines): a run of stored lines, positions first..first+n-1 of
# the epoch's tree, whose leaf hashes a signed checkpoint root vouched for with no broken
# line between the checkpoint before it and that one: exactly the lines `events_verified`
# counts. The lines are the stored bytes without their LF.
OnAccepted = Callable[[str, int, int, list[bytes]], None]


class AcceptedConsumerError(Exception):
    """`on_accepted` failed: the consumer's own error (a full disk, say), never a finding
    about the store; it ends verification and is raised from `verify` as its __cause__."""


@dataclass
class VerifyOptions:
    public_keys: list[Ed25519PublicKey] = field(default_factory=list)
    since_ns: int | None = None
    until_ns: int | None = None
    now_ns: int | None = None  # "now" for the open-stream staleness check; default: clock
    slack_seconds: float = DEFAULT_SLACK_SECONDS
    require_retention_days: float | None = None
    check_retention: bool = True
    read_threads: int | None = None  # None: 0 for file:// (local), 8 for remote stores
    # Streams verified at once, each in its own process (`verify --jobs`). Above 1 each
    # worker opens the destination again from its URL (sinks.open), so the URL and the
    # environment must say everything needed to reach it.
    jobs: int = 1
    # Called with every run of lines verification accepted (OnAccepted above), in stream
    # order; `Verification` is the same as an iterator. Verification then runs in one
    # process.
    on_accepted: OnAccepted | None = None
    # The operator's witness (FORMAT.md section 16): with keys, step 6 checks every
    # witness record and compares what it names with the store; TSA certificates (roots
    # and intermediates) check the records' timestamp tokens.
    witness_keys: list[Ed25519PublicKey] = field(default_factory=list)
    tsa_certificates: list[x509.Certificate] = field(default_factory=list)


class StreamContext:
    """The store and the options, as the steps of one stream see them.

    `object_time` collects the signed time of each checkpoint and segment (step 4 uses
    it when the store reports no write time)."""

    def __init__(self, destination: Destination, options: VerifyOptions, now_ns: int) -> None:
        self.destination = destination
        self.options = options
        self.now_ns = now_ns
        threads = options.read_threads
        if threads is None:
            threads = 0 if destination.url.startswith("file:") else READ_THREADS
        self.threads = threads
        self.object_time: dict[str, int] = {}

    def read(self, name: str, max_bytes: int) -> bytes:
        """An object's bytes, never more than `max_bytes` (what FORMAT.md allows for it)."""
        return self.destination.get(name, max_bytes=max_bytes)


def now_of(options: VerifyOptions) -> int:
    return options.now_ns if options.now_ns is not None else time.time_ns()
