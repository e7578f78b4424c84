"""The spool: durable appends, ordered reads, torn-tail recovery, release and compaction."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from auditlock.ledger.canonical import canonical_bytes
from auditlock.sidecar.spool.chunk_ids import forward_key, http_key
from auditlock.sidecar.spool.records import HEADER
from auditlock.sidecar.spool.spool import Spool, SpoolFull


def make(directory: Path, max_bytes: int = 1 << 20, segment_bytes: int = 4096) -> Spool:
    spool = Spool(directory, max_bytes=max_bytes, segment_bytes=segment_bytes)
    spool.open()
    return spool


def events(n: int, start: int = 0) -> list[bytes]:
    """Events as the intake hands them to the spool: their canonical bytes."""
    return [canonical_bytes({"n": i, "pad": "x" * 40}) for i in range(start, start + n)]


async def test_append_returns_increasing_record_numbers_and_reads_back(tmp_path: Path) -> None:
    spool = make(tmp_path)
    numbers = await asyncio.gather(*(spool.append(events(3, i * 3)) for i in range(10)))
    assert sorted(numbers) == list(range(1, 11))
    records = spool.reader(0).read(1000)
    assert [r.number for r in records] == list(range(1, 11))
    assert sum(len(r.events) for r in records) == 30


async def test_reopen_finds_every_record_and_its_chunks(tmp_path: Path) -> None:
    spool = make(tmp_path)
    for i in range(50):
        await spool.append(events(2, i * 2), keys=[f"chunk-{i}"])
    spool.close()
    again = make(tmp_path)
    assert again.committed == 50
    assert again.seen_chunk("chunk-0") and again.seen_chunk("chunk-49")
    assert not again.seen_chunk("chunk-50")
    ns = [json.loads(e)["n"] for r in again.reader(0).read(10_000) for e in r.events]
    assert ns == list(range(100))


async def test_torn_tail_is_truncated_and_earlier_records_survive(tmp_path: Path) -> None:
    spool = make(tmp_path, segment_bytes=1 << 20)
    for i in range(5):
        await spool.append(events(1, i))
    spool.close()
    (tail,) = spool.segment_paths()
    size = tail.stat().st_size
    # A record cut short by a crash mid-write.
    tail.write_bytes(tail.read_bytes() + HEADER.pack(1000, 0, 6) + b"\x00" * 10)
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    report = again.open()
    assert report.torn_bytes == HEADER.size + 10
    assert "torn" in report.problems[0]
    assert tail.stat().st_size == size
    assert again.committed == 5
    number = await again.append(events(1, 5))
    assert number == 6
    assert [json.loads(e)["n"] for r in again.reader(0).read(100) for e in r.events] == list(
        range(6)
    )


async def test_corrupted_checksum_in_tail_is_detected(tmp_path: Path) -> None:
    # A flipped byte in a complete record is damage, not a torn write: reported with the
    # file and offset, the record counted as lost, its number never used again.
    spool = make(tmp_path, segment_bytes=1 << 20)
    for i in range(3):
        await spool.append(events(1, i))
    spool.close()
    (tail,) = spool.segment_paths()
    data = bytearray(tail.read_bytes())
    last_record_at = 2 * (len(data) // 3)
    data[-3] ^= 0xFF
    tail.write_bytes(bytes(data))
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    report = again.open()
    assert report.problems == []  # not a silent repair
    (damage,) = report.damage
    assert damage.file == tail.name and damage.offset == last_record_at
    assert "checksum" in damage.reason and damage.lost_records == 1
    assert again.committed == 3 and again.gaps == [(3, 3)]
    assert await again.append(events(1, 3)) == 4
    records = again.reader(0).read(100)
    assert [(r.number, r.gap_before) for r in records] == [(1, 0), (2, 0), (4, 1)]


async def test_release_deletes_fully_released_segments_and_keeps_chunk_memory(
    tmp_path: Path,
) -> None:
    spool = make(tmp_path, segment_bytes=2048)
    for i in range(40):
        await spool.append(events(5, i * 5), keys=[f"c{i}"])
    before = len(spool.segment_paths())
    assert before > 3
    spool.join_stream(0, 0)
    spool.release(40, 200, 0)
    await spool.settle()
    assert len(spool.segment_paths()) == 1  # only the tail segment stays
    assert sum(1 for p in os.listdir(tmp_path) if p.startswith("seg-")) == 1  # files gone
    spool.close()
    again = make(tmp_path, segment_bytes=2048)
    assert again.released == 40 and again.released_next_seq == 200
    assert all(again.seen_chunk(f"c{i}") for i in range(40))  # from chunk-ids.log
    assert again.reader(again.released).read(100) == []


async def test_release_logs_every_chunk_id_of_records_with_many(tmp_path: Path) -> None:
    # Release reads only each record's header and ids (records.chunks_at): a record whose
    # ids run past the first bytes read is read further, and each record is stepped over
    # by its length whatever its events weigh.
    spool = make(tmp_path, segment_bytes=2048)
    keys = [[f"k{i}-{j}" for j in range(i * 20)] for i in range(8)]
    for i, batch in enumerate(keys):
        await spool.append(events(30, i * 30), keys=batch)
    assert len(spool.segment_paths()) > 3
    spool.join_stream(0, 0)
    spool.release(8, 240, 0)
    await spool.settle()
    spool.close()
    again = make(tmp_path, segment_bytes=2048)
    assert all(again.seen_chunk(k) for batch in keys for k in batch)


async def test_chunk_ids_with_newlines_survive_release_and_restart(tmp_path: Path) -> None:
    # A Forward chunk id is any short string. One with a newline must be remembered as
    # itself after its segment is released, and must not plant other ids ("a", "b").
    odd = ["a\nb", 'say "hi"', "Ünïcode ✓", "http:key-1"]
    spool = make(tmp_path, segment_bytes=2048)
    for i, chunk in enumerate(odd * 10):
        await spool.append(events(5, i * 5), keys=[f"{chunk}-{i}"])
    spool.join_stream(0, 0)
    spool.release(40, 200, 0)
    await spool.settle()
    spool.close()
    again = make(tmp_path, segment_bytes=2048)
    assert all(again.seen_chunk(f"{c}-{i}") for i, c in enumerate(odd * 10))
    assert not again.seen_chunk("a") and not again.seen_chunk("b-0")


async def test_chunk_log_from_before_json_lines_and_a_torn_line_are_read(
    tmp_path: Path,
) -> None:
    # The ids of that log were Forward chunk ids, or HTTP keys K written as "http:K".
    (tmp_path / "chunks.log").write_text('plain-old-id\n"json-id"\n"http:key-1"\n"torn')
    spool = make(tmp_path)
    assert spool.seen_chunk(forward_key("plain-old-id"))
    assert spool.seen_chunk(forward_key("json-id"))
    assert spool.seen_chunk(http_key("key-1")) and not spool.seen_chunk(forward_key("http:key-1"))
    assert not spool.seen_chunk(forward_key('"torn')) and not spool.seen_chunk(forward_key("torn"))


async def test_full_spool_refuses_appends_until_release(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    numbers = []
    with pytest.raises(SpoolFull):
        for i in range(10_000):
            numbers.append(await spool.append(events(10, i)))
    assert spool.fill_ratio > 0.9
    waiter = asyncio.create_task(spool.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    spool.join_stream(0, 0)
    spool.release(numbers[-1], len(numbers) * 10, 0)
    await asyncio.wait_for(waiter, 2)
    assert await spool.append(events(1))


async def test_each_append_is_fsynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    spool = make(tmp_path)
    synced.clear()
    await spool.append(events(1))
    assert synced, "append returned without an fsync"
