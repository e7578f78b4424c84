"""An evidence package is hostile input: only regular files with plain names, bounded in
count and size, never extracted (evidence/archive.py)."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from auditlock.evidence.archive import Limits, read_archive, write_archive
from auditlock.evidence.errors import EvidenceError


def _tar(path: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            body = (data or {}).get(info.name)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _code(path: Path, limits: Limits | None = None) -> str:
    with pytest.raises(EvidenceError) as caught:
        read_archive(path, limits)
    return caught.value.code


def test_written_archives_read_back_and_are_deterministic(tmp_path: Path) -> None:
    members = {"manifest.json": b"{}", "sample/proofs/000001.json": b"[]", "report.html": b"<p>"}
    first = write_archive(tmp_path / "a.tar.gz", members, mtime=1_700_000_000)
    second = write_archive(tmp_path / "b.tar.gz", dict(reversed(members.items())), 1_700_000_000)
    assert first == second
    assert read_archive(tmp_path / "a.tar.gz") == members


@pytest.mark.parametrize(
    "name", ["../escape.txt", "/etc/passwd", "a/../../b", "sample//x", ".hidden", "a\\b"]
)
def test_names_that_are_not_plain_relative_paths_are_refused(tmp_path: Path, name: str) -> None:
    path = _tar(tmp_path / "e.tar.gz", [_file(name)], {name: b"x"})
    assert _code(path) in ("member-unsafe", "archive-corrupt")
    assert not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]
)
def test_links_directories_and_special_files_are_refused(tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("report.html")
    info.type = kind
    info.linkname = "/etc/passwd"
    path = _tar(tmp_path / "e.tar.gz", [info])
    assert _code(path) == "member-unsafe"


def test_a_name_twice_is_refused(tmp_path: Path) -> None:
    path = _tar(tmp_path / "e.tar.gz", [_file("a"), _file("a")], {"a": b"x"})
    assert _code(path) == "member-duplicate"


def test_size_and_count_limits_hold(tmp_path: Path) -> None:
    big = _tar(tmp_path / "big.tar.gz", [_file("a", 2048)], {"a": b"x" * 2048})
    assert _code(big, Limits(member_bytes=1024)) == "archive-too-large"
    many = _tar(tmp_path / "many.tar.gz", [_file(f"m{i}") for i in range(20)],
                {f"m{i}": b"x" for i in range(20)})  # fmt: skip
    assert _code(many, Limits(members=10)) == "archive-too-large"


def test_a_gzip_bomb_stops_at_the_inflated_limit(tmp_path: Path) -> None:
    """100 MiB of zeros compress to ~100 KiB; reading stops at the 8 MiB limit."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = _file("zeros", 100 << 20)
        tar.addfile(info, io.BytesIO(bytes(100 << 20)))
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9))
    assert bomb.stat().st_size < 1 << 20
    assert _code(bomb, Limits(member_bytes=1 << 30, total_bytes=8 << 20)) == "archive-too-large"


@pytest.mark.parametrize("content", [b"", b"not gzip at all", gzip.compress(b"not a tar" * 100)])
def test_what_is_not_a_tar_gz_is_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.tar.gz"
    path.write_bytes(content)
    assert _code(path) == "archive-corrupt"


def test_a_truncated_archive_is_corrupt(tmp_path: Path) -> None:
    whole = write_archive(tmp_path / "a.tar.gz", {"a": b"x" * 100_000}, mtime=0)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    assert _code(cut) == "archive-corrupt"
