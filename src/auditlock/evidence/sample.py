"""The reproducible random sample of an evidence package (docs/review.md, "Sampling").

Each event of the population (the events verification accepted whose time is in the
period) gets a sample key

    key = SHA-256( UTF-8( "auditlock-sample/v1" LF seed LF stream LF epoch LF seq ) )

with epoch and seq in decimal, no padding and no LF at the end; the sample is the N events
with the smallest keys (compared as bytes, that is as 256-bit big-endian numbers), listed
in increasing key order. The same seed over the same population gives the same sample on
any machine; another seed gives an independent one. Every event has the same chance to
be drawn, and no event can be steered in or out without knowing the seed in advance (pick
the seed after the period ends, e.g. in the auditor's presence).

An auditor reproduces one key with coreutils:

    printf 'auditlock-sample/v1\\n%s\\n%s\\n%d\\n%d' "$SEED" "$STREAM" "$EPOCH" "$SEQ" | sha256sum
"""

from __future__ import annotations

import hashlib

ALGORITHM = "auditlock-sample/v1"


def sample_key(seed: str, stream: str, epoch: int, seq: int) -> str:
    """The hex sample key of one event."""
    text = f"{ALGORITHM}\n{seed}\n{stream}\n{int(epoch)}\n{int(seq)}"
    return hashlib.sha256(text.encode()).hexdigest()


def sample_key_sql(seed_literal: str) -> str:
    """The same key as a DuckDB expression over the columns stream, epoch and seq (its
    `sha256` of a VARCHAR hashes the UTF-8 bytes and returns lowercase hex);
    `seed_literal` is the seed as a quoted SQL string."""
    return (
        f"sha256('{ALGORITHM}' || chr(10) || {seed_literal} || chr(10) || stream || chr(10) "
        "|| CAST(epoch AS VARCHAR) || chr(10) || CAST(seq AS VARCHAR))"
    )
