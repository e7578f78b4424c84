"""file:// destination: atomic, never-overwriting, read-only files with retention metadata."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditlock import sinks
from auditlock.sinks import (
    DestinationError,
    LockMode,
    ObjectConflict,
    ObjectNotFound,
    RetentionSpec,
)
from auditlock.sinks.file import FileDestination

SPEC = RetentionSpec(period=timedelta(days=30), mode=LockMode.LOCKED)


@pytest.fixture
def dest(tmp_path: Path) -> FileDestination:
    d = sinks.open(f"file://{tmp_path}/trail")
    assert isinstance(d, FileDestination)
    return d


def test_put_then_get_round_trips_bytes_under_nested_name(dest: FileDestination) -> None:
    result = dest.put("streams/s1/segments/0001.jsonl", b"line\n", SPEC)
    assert result.created and result.size == 5
    assert dest.get("streams/s1/segments/0001.jsonl") == b"line\n"


def test_stored_file_is_read_only(dest: FileDestination) -> None:
    dest.put("a/b", b"x", SPEC)
    mode = stat.S_IMODE(os.stat(dest.root / "a" / "b").st_mode)
    assert mode == 0o444


def test_same_bytes_again_is_idempotent_not_a_second_copy(dest: FileDestination) -> None:
    first = dest.put("obj", b"payload", SPEC)
    second = dest.put("obj", b"payload", SPEC)
    assert first.created and not second.created
    assert second.retention == first.retention  # the original lock, not a new one
    assert list(dest.list()) == ["obj"]


def test_different_bytes_under_same_name_is_refused_and_not_overwritten(
    dest: FileDestination,
) -> None:
    dest.put("obj", b"original", SPEC)
    with pytest.raises(ObjectConflict, match="refusing to overwrite"):
        dest.put("obj", b"tampered", SPEC)
    assert dest.get("obj") == b"original"


def test_retention_is_recorded_and_read_back(dest: FileDestination) -> None:
    before = datetime.now(UTC)
    dest.put("obj", b"x", RetentionSpec(timedelta(days=7), LockMode.UNLOCKED, legal_hold=True))
    r = dest.retention("obj")
    assert r.mode is LockMode.UNLOCKED and r.legal_hold
    assert r.retain_until is not None
    # retain-until is rounded up to the whole second (RetentionSpec.retain_until)
    assert (
        before + timedelta(days=7)
        <= r.retain_until
        <= datetime.now(UTC) + timedelta(days=7, seconds=1)
    )
    meta = dest.root / ".retention" / "obj.json"
    assert stat.S_IMODE(os.stat(meta).st_mode) == 0o444


def test_put_reports_the_retention_it_recorded(dest: FileDestination) -> None:
    spec = RetentionSpec(timedelta(days=7), LockMode.LOCKED, legal_hold=True)
    first = dest.put("obj", b"x", spec)
    assert first.created and first.retention == dest.retention("obj")
    again = dest.put("obj", b"x", spec)  # the record written first stands
    assert not again.created and again.retention == first.retention


def test_object_without_retention_reports_no_lock(dest: FileDestination) -> None:
    dest.put("obj", b"x", None)
    r = dest.retention("obj")
    assert r.mode is None and r.retain_until is None


def test_retry_heals_retention_metadata_lost_in_a_crash(dest: FileDestination) -> None:
    dest.put("obj", b"x", SPEC)
    meta = dest.root / ".retention" / "obj.json"
    meta.unlink()  # as if the process died between linking the object and its metadata
    again = dest.put("obj", b"x", SPEC)
    assert not again.created
    assert dest.retention("obj").mode is LockMode.LOCKED


def test_list_is_sorted_prefix_filtered_and_hides_metadata(dest: FileDestination) -> None:
    for name in ["b/2", "a/1", "b/1", "c"]:
        dest.put(name, name.encode(), SPEC)
    (dest.root / ".tmp" / "leftover.part").write_bytes(b"partial")
    assert list(dest.list()) == ["a/1", "b/1", "b/2", "c"]
    assert list(dest.list("b/")) == ["b/1", "b/2"]
    assert list(dest.list("zzz")) == []


def test_missing_object_raises_not_found(dest: FileDestination) -> None:
    with pytest.raises(ObjectNotFound):
        dest.get("nope")
    dest.put("dir/obj", b"x", SPEC)
    with pytest.raises(ObjectNotFound):
        dest.get("dir")  # a directory is not an object
    with pytest.raises(ObjectNotFound):
        dest.retention("nope")


def test_list_of_missing_directory_is_empty(tmp_path: Path) -> None:
    assert list(sinks.open(f"file://{tmp_path}/absent").list()) == []


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a//b", "a/", ".retention/x", ".tmp/x"])
def test_unsafe_or_reserved_names_are_refused(dest: FileDestination, bad: str) -> None:
    with pytest.raises(DestinationError):
        dest.put(bad, b"x", SPEC)


def test_check_passes_for_development_but_says_it_is_not_worm(dest: FileDestination) -> None:
    report = dest.check(SPEC)
    assert report.ok and not report.worm
    assert any("not WORM" in n for n in report.notices)
    assert "not WORM" in report.summary()


def test_check_fails_when_directory_is_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write to read-only directories")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        report = sinks.open(f"file://{ro}/trail").check(SPEC)
        assert not report.ok and "not writable" in report.problems[0]
    finally:
        ro.chmod(0o755)


def test_check_fails_when_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    report = sinks.open(f"file://{tmp_path}/f").check(SPEC)
    assert not report.ok and "not a directory" in report.problems[0]


def test_write_failure_is_a_clear_destination_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(DestinationError, match="cannot write"):
        sinks.open(f"file://{tmp_path}/f").put("obj", b"x", SPEC)


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(DestinationError, match="use one of"):
        sinks.open("ftp://host/x")


def test_relative_and_localhost_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sinks.open("file://rel/dir").root == Path("rel/dir")  # type: ignore[attr-defined]
    assert sinks.open("file://localhost/abs").root == Path("/abs")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "must_not_import"),
    [
        ("file:///tmp/x", ["boto3", "botocore", "google.cloud.storage"]),
        ("s3://bucket/p", ["google.cloud.storage", "google.auth"]),
        ("gs://bucket/p", ["boto3", "botocore"]),
    ],
)
def test_opening_a_destination_imports_only_its_own_client(
    url: str, must_not_import: list[str]
) -> None:
    code = (
        "import sys\n"
        "from auditlock import sinks\n"
        f"d = sinks.open({url!r})\n"
        f"leaked = [m for m in {must_not_import!r} if m in sys.modules]\n"
        "print(','.join(leaked))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"{url} imported {out.stdout.strip()}"


def test_racing_writers_of_one_name_create_it_once(dest: FileDestination) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: dest.put("raced", b"same", SPEC).created, range(32)))
    assert results.count(True) == 1
    assert list(dest.list()) == ["raced"]
    assert list((dest.root / ".tmp").iterdir()) == []  # no temp file left behind
