"""The spool under disk faults and damage: failed writes, damaged files at start, bounded
chunk-id memory, records that do not fit. Disk faults are real (a small tmpfs)."""

from __future__ import annotations

import asyncio
import json
import os
import tracemalloc
from pathlib import Path

import msgpack
import pytest

from auditlock.ledger.canonical import canonical_bytes
from auditlock.sidecar.spool.chunk_ids import forward_key, http_key
from auditlock.sidecar.spool.records import HEADER, encode
from auditlock.sidecar.spool.recovery import RecoveryReport
from auditlock.sidecar.spool.spool import (
    RecordTooLarge,
    Spool,
    SpoolCorrupt,
    SpoolFull,
    SpoolWriteFailed,
)
from auditlock.sidecar.spool.unreleased import Unreleased
from tests.helpers.spool import record_offsets
from tests.servers.disk_faults import fill, small_tmpfs, unfill


def make(directory: Path, max_bytes: int = 1 << 20, segment_bytes: int = 4096) -> Spool:
    spool = Spool(directory, max_bytes=max_bytes, segment_bytes=segment_bytes)
    spool.open()
    return spool


def events(n: int, start: int = 0, pad: int = 40) -> list[bytes]:
    """Events as the intake hands them to the spool: their canonical bytes."""
    return [canonical_bytes({"n": i, "pad": "x" * pad}) for i in range(start, start + n)]


def numbers_read(spool: Spool) -> list[int]:
    return [json.loads(e)["n"] for r in spool.reader(0).read(1_000_000) for e in r.events]


async def filled(spool: Spool, count: int, per: int = 5) -> None:
    for i in range(count):
        await spool.append(events(per, i * per), keys=[forward_key(f"c{i}")])
    spool.close()


# --- failed writes ------------------------------------------------------------------


async def test_a_write_the_full_disk_refuses_is_cut_off_and_never_acknowledged(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk", 1 << 20) as disk:
        spool = make(disk / "spool", segment_bytes=1 << 20)
        acked: list[int] = []
        for i in range(20):
            acked.append(await spool.append(events(1, i)))
        fill(disk, leave=3000)
        refused: list[int] = []
        for i in range(20, 60):  # each ~600 bytes: the disk fills part-way through one
            try:
                await spool.append(events(5, i * 10, pad=100))
                acked.extend(range(i * 10, i * 10 + 5))
            except SpoolWriteFailed as exc:
                assert "No space left" in str(exc)
                refused.append(i)
        assert refused, "the disk never filled"
        (tail,) = spool.segment_paths()
        assert tail.stat().st_size == spool.state.segments[-1].size  # nothing half-written
        unfill(disk)
        after = await spool.append(events(1, 9999))
        assert after == spool.committed  # the next number, none repeated or skipped
        spool.close()
        again = make(disk / "spool", segment_bytes=1 << 20)
        assert again.committed == after
        read = numbers_read(again)
        assert read == [n for n in range(20)] + [n for n in acked if n >= 200] + [9999]
        assert not any(10 * i <= n < 10 * i + 5 for i in refused for n in read)


async def test_a_record_number_out_of_order_is_an_error_not_skipped(tmp_path: Path) -> None:
    spool = make(tmp_path, segment_bytes=1 << 20)
    await spool.append(events(1))
    tail = spool.segment_paths()[-1]
    # What the old writer left after a failed write: the same number written again.
    append_bytes(tail, encode(1, msgpack.packb([[], 0, [b"{}"], 2])))
    spool.state.segments[-1].size = tail.stat().st_size
    spool.state.committed = 2
    with pytest.raises(
        SpoolCorrupt, match=rf"{tail.name} at byte \d+: record number 1, expected 2"
    ):
        spool.reader(0).read(100)


# --- damage found at start ----------------------------------------------------------


def opened(directory: Path, segment_bytes: int = 2048) -> tuple[Spool, RecoveryReport]:
    spool = Spool(directory, max_bytes=1 << 20, segment_bytes=segment_bytes)
    return spool, spool.open()


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.spool"))


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def first_of(path: Path) -> int:
    return int(path.name[len("seg-") : -len(".spool")])


def flip(path: Path, offset: int) -> bytes:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


async def test_a_flipped_byte_in_a_middle_segment_is_reported_and_the_rest_is_kept(
    tmp_path: Path,
) -> None:
    await filled(make(tmp_path, segment_bytes=2048), 30)
    paths = segment_files(tmp_path)
    assert len(paths) >= 4
    victim = paths[1]
    damaged = flip(victim, HEADER.size + 5)  # inside the first record's payload
    first, following = first_of(victim), first_of(paths[2])
    again, report = opened(tmp_path)
    (damage,) = report.damage
    assert damage.file == victim.name and damage.offset == 0
    assert "checksum" in damage.reason and f"records {first}..{following - 1}" in damage.reason
    assert report.problems == [] and report.lost_records == following - first
    assert damage.kept_at is not None and (tmp_path / damage.kept_at).read_bytes() == damaged
    lost = set(range((first - 1) * 5, (following - 1) * 5))
    assert numbers_read(again) == [n for n in range(150) if n not in lost]
    assert again.append is not None and await again.append(events(1)) == again.committed
    again.close()
    # The loss is recorded (state.json gaps): the next start reports nothing again.
    third, report = opened(tmp_path)
    assert report.damage == [] and numbers_read(third) == [
        n for n in range(150) if n not in lost
    ] + [0]


async def test_a_flipped_length_in_the_last_segment_is_damage_not_a_torn_tail(
    tmp_path: Path,
) -> None:
    await filled(make(tmp_path, segment_bytes=1 << 20), 6)
    (tail,) = segment_files(tmp_path)
    third = record_offsets(tail)[2]
    # Record 3's length made larger than what follows: it now looks cut short, but intact
    # records follow it, so this is damage and records 4-6 must not silently vanish.
    flip(tail, third + 2)
    again, report = opened(tmp_path, 1 << 20)
    (damage,) = report.damage
    assert damage.offset == third and "cut short" in damage.reason
    assert damage.lost_records == 4  # records 3..6: the file is cut at the damage
    assert report.problems == []
    assert numbers_read(again) == list(range(10))
    assert await again.append(events(1, 100)) == 7  # numbers 3..6 are never used again


async def test_a_flipped_length_of_the_very_last_record_is_damage_too(tmp_path: Path) -> None:
    await filled(make(tmp_path, segment_bytes=1 << 20), 3)
    (tail,) = segment_files(tmp_path)
    third = record_offsets(tail)[2]
    flip(tail, third + 1)  # length of record 3 grows by 256: runs past the end
    again, report = opened(tmp_path, 1 << 20)
    (damage,) = report.damage
    assert damage.offset == third and damage.lost_records == 1
    assert numbers_read(again) == list(range(10))


async def test_only_a_record_cut_short_at_the_very_end_is_repaired_silently(
    tmp_path: Path,
) -> None:
    await filled(make(tmp_path, segment_bytes=1 << 20), 3)
    (tail,) = segment_files(tmp_path)
    data = tail.read_bytes()
    tail.write_bytes(data[: len(data) - 7])  # the last write was cut off by a crash
    again, report = opened(tmp_path, 1 << 20)
    assert report.damage == [] and "torn" in report.problems[0]
    assert numbers_read(again) == list(range(10))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x00garbage{", "not a valid spool state"),
        (b'{"released": "many"}', "not a valid spool state"),
        (b'{"released": 1000, "next_seq": 5000, "epoch": 0}', "claims 1000 released records"),
    ],
)
async def test_an_untrusted_state_file_is_reported_and_every_record_shipped_again(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    spool = make(tmp_path, segment_bytes=2048)
    await filled(spool, 10)
    spool = make(tmp_path, segment_bytes=2048)
    spool.join_stream(0, 0)
    spool.release(4, 20, 0)
    await spool.settle()
    spool.close()
    (tmp_path / "state.json").write_bytes(content)
    again, report = opened(tmp_path)
    (damage,) = report.damage
    assert damage.file == "state.json" and reason in damage.reason
    assert report.reship_all and damage.kept_at is not None
    assert again.released_next_seq is None  # joins the stream afresh: nothing skipped
    first = first_of(again.segment_paths()[0])
    assert numbers_read(again) == list(range((first - 1) * 5, 50))


async def test_a_missing_segment_file_is_reported_as_lost_records(tmp_path: Path) -> None:
    await filled(make(tmp_path, segment_bytes=2048), 30)
    paths = segment_files(tmp_path)
    paths[1].unlink()
    _, report = opened(tmp_path)
    (damage,) = report.damage
    assert damage.lost_records == first_of(paths[2]) - first_of(paths[1])
    assert "missing" in damage.reason


# --- one namespace per kind of id; bounded memory -------------------------------------


async def test_a_forward_chunk_id_never_matches_an_http_key(tmp_path: Path) -> None:
    spool = make(tmp_path)
    await spool.append(events(1), keys=[forward_key("http:K")])
    await spool.append(events(1), keys=[http_key("L")])
    assert spool.seen_chunk(forward_key("http:K")) and not spool.seen_chunk(http_key("K"))
    assert spool.seen_chunk(http_key("L")) and not spool.seen_chunk(forward_key("http:L"))
    spool.close()
    again = make(tmp_path)
    assert again.seen_chunk(forward_key("http:K")) and not again.seen_chunk(http_key("K"))


async def test_a_record_of_an_older_spool_keeps_its_ids(tmp_path: Path) -> None:
    # Records written before digests: three members, ids as written ("http:" for HTTP).
    payload = msgpack.packb([["chunk-7", "http:key-7"], 1, [b"{}"]], use_bin_type=True)
    (tmp_path / "seg-00000000000000000001.spool").write_bytes(encode(1, payload))
    spool = make(tmp_path)
    assert spool.seen_chunk(forward_key("chunk-7")) and spool.seen_chunk(http_key("key-7"))
    assert spool.reader(0).read(10)[0].events == [b"{}"]


async def test_chunk_id_memory_is_bounded_in_bytes_not_by_id_length(tmp_path: Path) -> None:
    # 100,000 ids of 256 characters: keeping the ids themselves would take far more than
    # the digests the spool keeps (about 100 bytes an id, at 100,000 as at 200,000).
    spool = make(tmp_path, max_bytes=64 << 20, segment_bytes=16 << 20)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for batch in range(10):
            keys = [forward_key(f"{batch:04d}-{i:06d}".ljust(256, "x")) for i in range(10_000)]
            await spool.append([], keys=keys)
            del keys
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert spool.seen_chunk(forward_key("0000-000000".ljust(256, "x")))
    assert grown < 12_500_000, f"{grown / 1e6:.1f} MB for 100,000 ids"


# --- records that do not fit ----------------------------------------------------------


async def test_a_record_larger_than_the_spool_is_refused_at_once(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    with pytest.raises(RecordTooLarge, match="can never be spooled"):
        await spool.append(events(1, pad=70_000))
    assert not spool.full and await spool.append(events(1)) == 1


async def test_a_record_too_big_for_now_waits_and_does_not_latch_full(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    first = await spool.append(events(1, pad=36_000))
    with pytest.raises(SpoolFull) as refused:
        await spool.append(events(1, pad=36_000))
    assert not spool.full  # 28 KiB are free: small appends still go in
    assert await spool.append(events(1)) == first + 1
    waiter = asyncio.create_task(spool.wait_for_room(refused.value.needed))
    await asyncio.sleep(0.1)
    assert not waiter.done()  # waits for a release, without polling
    spool.join_stream(0, 0)
    spool.release(first + 1, 2, 0)
    await asyncio.wait_for(waiter, 2)
    assert await spool.append(events(1, pad=36_000)) == first + 2


async def test_the_full_flag_clears_when_shipping_frees_room(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    numbers = []
    with pytest.raises(SpoolFull):
        while True:
            numbers.append(await spool.append(events(10)))
    assert spool.full
    spool.join_stream(0, 0)
    spool.release(numbers[-1], 10 * len(numbers), 0)
    assert not spool.full and spool.bytes_used == 0
    await spool.settle()
    assert os.listdir(tmp_path)


def test_each_unreleased_record_costs_a_few_bytes_of_memory() -> None:
    # A full spool of chunk-only Forward records holds millions of ~50-byte records; the
    # cost per record is the point, so a quarter million of them (tracemalloc makes each
    # add slow) must each cost under 16 bytes.
    records = 250_000
    book = Unreleased(0)
    tracemalloc.start()
    try:
        for number in range(1, records + 1):
            book.add(number, 1_700_000_000_000_000_000 + number, 50)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 16 * records, f"{held / records:.1f} bytes for each of {records:,} records"
    assert book.bytes == 50 * records
    book.add(records + 10, 5, 70)  # the 9 records before it were lost: no space held
    book.release(records - 1)
    assert (book.bytes, book.oldest_ns()) == (120, 1_700_000_000_000_000_000 + records)
    book.release(records + 9)
    assert (book.bytes, book.oldest_ns()) == (70, 5)
