"""SHA-256 for building a ledger: the writer's hash chain and its Merkle nodes.

A build makes about two hash calls per event: the line's leaf hash (the floor: one per
line) and, on average, one Merkle node (a tree of n leaves has n - 1), each over little
data (~450 and 65 bytes). hashlib costs about 1 µs per call before it hashes a byte
(OpenSSL 3 sets up an EVP context for each, and copies it again in `digest()`), more
than hashing the whole line takes with the CPU's SHA instructions. stringzilla's
`sha256` is one C call from bytes to digest: about half hashlib's cost per line and a
third per node (docs/benchmarks.md, "Ledger build"). Why a native wheel is acceptable
here: docs/architecture.md, "Why the writer hashes with stringzilla".

stringzilla is used only where the CPU has SHA-256 instructions (its `goldmont` backend,
SHA-NI on x86; `neonsha` on Arm): its portable code is about twice as slow as OpenSSL's,
so elsewhere the writer hashes with hashlib as before. The bytes are the same either way.

Only the writing side uses this module. Verify, resume and proofs hash with hashlib
(lines.py, merkle.py), so every hash a writer made is recomputed by a second,
independent SHA-256 implementation each time its ledger is verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import stringzilla

_SHA_INSTRUCTIONS = {"goldmont", "neonsha"}  # stringzilla's backends that use them
ACCELERATED = bool(_SHA_INSTRUCTIONS & set(stringzilla.__capabilities__))

_openssl = hashlib.sha256


def openssl_sha256(data: bytes) -> bytes:
    """The digest by hashlib: the writer's SHA-256 on CPUs without SHA instructions."""
    return _openssl(data).digest()


# bytes -> the 32-byte digest. When accelerated, the C function itself: a Python wrapper
# around it would cost a call per hash.
sha256: Callable[[bytes], bytes] = stringzilla.sha256 if ACCELERATED else openssl_sha256


def node_pairs(level: Sequence[bytes]) -> list[bytes]:
    """The parents of an even-length Merkle level, left to right: SHA-256(0x01 || left ||
    right) for each pair (RFC 9162 2.1.1), what merkle.py's own pairing computes."""
    digest = sha256
    out: list[bytes] = []
    add = out.append
    pairs = iter(level)
    for left, right in zip(pairs, pairs, strict=True):
        add(digest(b"\x01" + left + right))
    return out
