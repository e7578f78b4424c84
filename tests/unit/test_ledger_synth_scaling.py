"""`auditlock synth --streams N` does work linear in N (issue 13.8).

Each stream's writer lists its own stream before it starts (resume). A file://
destination that walked the whole store for every listing would make N streams cost N
whole walks: quadratic. The work is counted, not timed, so a busy machine cannot hide it:
directories walked by the destination and files it looked at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditlock import sinks
from auditlock.ledger.synth import synthesize
from auditlock.sinks import file as file_sink

from .ledger_helpers import make_signer


def _entries_walked(tmp_path: Path, streams: int, monkeypatch: pytest.MonkeyPatch) -> int:
    seen = [0]
    real_walk = os.walk

    def counting_walk(top: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            seen[0] += 1 + len(filenames)
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(file_sink.os, "walk", counting_walk)
    dest = sinks.open(f"file://{tmp_path}/n{streams}", fsync=False)
    stats = synthesize(dest, make_signer(1), streams=streams, events=3)
    assert stats.streams == streams
    return seen[0]


def test_synth_work_grows_linearly_with_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _entries_walked(tmp_path, 20, monkeypatch)
    large = _entries_walked(tmp_path, 80, monkeypatch)
    # 4x the streams: linear work is ~4x; walking the whole store per stream is ~16x.
    assert large <= 5 * small, (small, large)


def test_listing_one_stream_does_not_walk_the_others(tmp_path: Path) -> None:
    dest = sinks.open(f"file://{tmp_path}/s", fsync=False)
    for name in ["streams/a/000000/x", "streams/ab/000000/y", "streams/b/000000/z", "keys/k"]:
        dest.put(name, b"1", None)
    assert list(dest.list("streams/a/")) == ["streams/a/000000/x"]
    assert list(dest.list("streams/a")) == ["streams/a/000000/x", "streams/ab/000000/y"]
    assert list(dest.list("streams/")) == [
        "streams/a/000000/x",
        "streams/ab/000000/y",
        "streams/b/000000/z",
    ]
    assert list(dest.list("keys/k")) == ["keys/k"]
    assert list(dest.list("nothing/here/")) == []
    assert list(dest.list(".tmp/")) == []
