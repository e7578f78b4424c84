"""The size limits of docs/FORMAT.md are kept by the writing side, so the reading side can
refuse anything larger (limits.py): no event larger than MAX_EVENT_BYTES is accepted, no
segment larger than MAX_SEGMENT_BYTES is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditlock.ledger.errors import LedgerError
from auditlock.ledger.limits import MAX_EVENT_BYTES, MAX_SEGMENT_BYTES
from auditlock.ledger.segment import decode_segment
from auditlock.ledger.writer import StreamWriter
from auditlock.sidecar.config import PipelineConfig, SourceIdentity
from auditlock.sidecar.pipeline import Pipeline
from tests.helpers.events import small

from .ledger_helpers import new_ledger

NS = 1_764_428_645_123_456_789


def _event(i: int, size: int) -> dict[str, object]:
    return small(
        id=f"e-{i}",
        category="data",
        action="put",
        actor={"kind": "user", "name": "a"},
        target={"resource": "blobs"},
        details={"blob": "b" * size},
    )


def test_an_event_that_grows_past_the_limit_when_stored_is_refused_at_intake() -> None:
    p = Pipeline(PipelineConfig(), SourceIdentity(cluster="c1", pod="api-1"))
    # 3 Mi control characters: 3 MiB as sent, 18 MiB once escaped as \\u0001
    record = {
        "category": "access",
        "action": "a",
        "actor": "x",
        "target": "t",
        "v": "\x01" * (3 << 20),
    }
    small = {"category": "access", "action": "a", "actor": "x", "target": "t"}
    out = p.process_all("http", [("http", NS, record), ("http", NS, small)])
    assert len(out.events) == 1
    assert [(r.reason, r.field) for r in out.unstorable] == [("too_large", "record")]
    assert str(MAX_EVENT_BYTES) in str(out.unstorable[0])


def test_the_writer_never_makes_a_segment_larger_than_the_limit(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    writer = StreamWriter.resume(led.dest, "big", led.signer, retention=None)
    with pytest.raises(LedgerError, match="more than"):
        writer.append(_event(0, MAX_EVENT_BYTES))
    assert writer.next_seq == 0  # a refused event changes nothing
    for i in range(10):  # 10 x 15 MiB: three segments, each within the limit
        writer.append(_event(i, 15 << 20))
    segments = [o for o in writer.seal() if o.kind == "segment"]
    assert len(segments) == 3
    lines = [decode_segment(s.data, compressed=s.name.endswith(".gz")) for s in segments]
    assert all(len(b"\n".join(part)) + 1 <= MAX_SEGMENT_BYTES for part in lines)
    assert sum(map(len, lines)) == 10
