"""The writer's SHA-256 (ledger/build_hash.py) is SHA-256: the same digests as hashlib on
every input length, with stringzilla's SHA-instruction backend and its portable one, and
the same Merkle levels and frontiers as merkle.py's hashlib code."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import stringzilla
from hypothesis import given, settings
from hypothesis import strategies as st

from auditlock.ledger import build_hash
from auditlock.ledger import lines as lines_module
from auditlock.ledger import writer as writer_module
from auditlock.ledger.build_hash import node_pairs, openssl_sha256, sha256
from auditlock.ledger.lines import ZERO_HASH, LineFormat, leaf_hashes
from auditlock.ledger.merkle import Frontier, _pairs
from auditlock.ledger.synth import synthetic_events

from .ledger_helpers import make_signer, new_ledger

# Every length up to four blocks crosses each padding boundary (55/56, 63/64 bytes).
LENGTHS = [*range(0, 260), 447, 448, 511, 512, 4096, 65_537]


@pytest.fixture(params=["accelerated", "portable"])
def stringzilla_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """stringzilla restricted to one backend for the test, then restored."""
    before = list(stringzilla.__capabilities__)
    if request.param == "portable":
        stringzilla.reset_capabilities(["serial"])
    elif not build_hash.ACCELERATED:
        pytest.skip("this CPU has no SHA instructions stringzilla uses")
    try:
        yield request.param
    finally:
        stringzilla.reset_capabilities(before)


def test_stringzilla_sha256_is_sha256_on_every_length(stringzilla_backend: str) -> None:
    for n in LENGTHS:
        data = os.urandom(n)
        assert stringzilla.sha256(data) == hashlib.sha256(data).digest(), (stringzilla_backend, n)


def test_the_writers_sha256_is_sha256() -> None:
    assert sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 B.1
    )
    for n in LENGTHS:
        data = os.urandom(n)
        assert sha256(data) == openssl_sha256(data) == hashlib.sha256(data).digest()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_the_writers_sha256_equals_hashlib_on_any_bytes(data: bytes) -> None:
    assert sha256(data) == hashlib.sha256(data).digest()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0),
)
def test_the_writers_merkle_nodes_equal_merkle_py(start: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    leaves = [rng.randbytes(32) for _ in range(start + count)]
    level = leaves[: len(leaves) & ~1]
    assert node_pairs(level) == _pairs(level)
    ours, theirs = Frontier(), Frontier()
    for tree in (ours, theirs):
        tree.extend(leaves[:start])
    ours.extend(leaves[start:], node_pairs)
    theirs.extend(leaves[start:])
    assert (ours.size, ours.nodes, ours.root()) == (theirs.size, theirs.nodes, theirs.root())


def test_the_writers_chain_hashes_equal_the_verifiers() -> None:
    events = [b'{"n":%d,"s":"%b"}' % (i, b"x" * i) for i in range(300)]
    lines, leaves = LineFormat(b"s", 3).chain(events, 7, ZERO_HASH)
    assert leaves == leaf_hashes(lines)  # hashlib, as verify computes them


def test_a_writer_on_hashlib_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a CPU without SHA instructions runs (build_hash falls back to hashlib)."""
    batch = [event for _, event in synthetic_events("s", 2500)]
    written = []
    for fallback in (False, True):
        if fallback:
            monkeypatch.setattr(lines_module, "build_sha256", openssl_sha256)
            monkeypatch.setattr(writer_module, "node_pairs", _pairs)
        writer = new_ledger(tmp_path / str(fallback), make_signer(3)).writer("s")
        for start in range(0, len(batch), 700):  # seals of uneven sizes: every frontier shape
            writer.extend(batch[start : start + 700])
            written += [o.data for o in writer.seal()]
        written.append(b"--")
    half = len(written) // 2
    assert written[:half] == written[half:]
