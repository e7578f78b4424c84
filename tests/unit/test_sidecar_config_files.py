"""Config-file capture on a real ConfigMap-style volume (`..data` symlink swap) in a tmp dir."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from auditlock.sidecar.sources.config_files.scan import _Scan
from auditlock.sidecar.sources.config_files.watcher import Scanner, diff
from tests.helpers.config_volumes import ConfigMapVolume


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_first_scan_is_a_baseline_of_hashes_without_contents(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.publish({"app.yaml": "debug: false\n", "password": "hunter2"})
    records = diff(None, Scanner([str(volume.root)]).scan())
    assert [r["action"] for r in records] == ["config.file.observed"] * 2
    by_path = {r["details"]["path"]: r for r in records}
    assert by_path[str(volume.root / "password")]["details"]["new_sha256"] == sha("hunter2")
    assert "hunter2" not in repr(records)
    assert all(r["details"]["volume_revision"].startswith("..2026") for r in records)


def test_symlink_swap_reports_modified_created_and_deleted_files(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.publish({"app.yaml": "debug: false\n", "old.conf": "x", "same": "s"})
    scanner = Scanner([str(volume.root)])
    before = scanner.scan()
    volume.publish({"app.yaml": "debug: true\n", "new.conf": "y", "same": "s"})
    after = scanner.scan()
    records = {r["details"]["path"].rsplit("/", 1)[-1]: r for r in diff(before, after)}
    assert set(records) == {"app.yaml", "old.conf", "new.conf"}
    modified = records["app.yaml"]
    assert modified["action"] == "config.file.modified"
    assert modified["details"]["old_sha256"] == sha("debug: false\n")
    assert modified["details"]["new_sha256"] == sha("debug: true\n")
    assert records["old.conf"]["action"] == "config.file.deleted"
    assert records["new.conf"]["action"] == "config.file.created"
    assert modified["category"] == "configuration"


def test_no_change_means_no_events_and_no_rehash(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.publish({"a": "1"})
    scanner = Scanner([str(volume.root)])
    first = scanner.scan()
    assert diff(first, scanner.scan()) == []


def test_single_watched_file_and_missing_paths(tmp_path: Path) -> None:
    plain = tmp_path / "settings.ini"
    plain.write_text("a=1")
    scanner = Scanner([str(plain), str(tmp_path / "not-there")])
    first = scanner.scan()
    assert list(first) == [str(plain)]
    plain.write_text("a=2")
    (record,) = diff(first, scanner.scan())
    assert record["action"] == "config.file.modified"


def test_configmap_subdirectories_resolve_inside_the_volume(tmp_path: Path) -> None:
    """ConfigMap items with paths (`conf/app.yaml`) are a link `conf -> ..data/conf` to a
    directory: the links stay inside the volume, so they are followed."""
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.publish({"conf/app.yaml": "a: 1\n", "top": "t"})
    snapshot = Scanner([str(volume.root)]).scan()
    assert snapshot[f"{volume.root}/conf/app.yaml"]["sha256"] == sha("a: 1\n")
    assert snapshot[f"{volume.root}/top"]["sha256"] == sha("t")
    assert not any("skipped" in entry for entry in snapshot.values())


def test_a_watched_file_that_links_out_of_its_folder_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (tmp_path / "watched").mkdir()
    link = tmp_path / "watched" / "settings"
    link.symlink_to(outside / "secret")
    (record,) = diff(None, Scanner([str(link)]).scan())
    assert record["action"] == "config.file.skipped"
    assert record["details"] == {"path": str(link), "reason": "outside_volume"}
    assert sha("s") not in repr(record)


def test_a_file_that_grows_past_the_cap_while_read_is_not_hashed(tmp_path: Path) -> None:
    plain = tmp_path / "settings.ini"
    plain.write_text("a=1")
    scanner = Scanner([str(plain)], max_file_bytes=10)
    first = scanner.scan()
    plain.write_text("a=" + "1" * 20)
    second = scanner.scan()
    (record,) = diff(first, second)
    assert record["action"] == "config.file.skipped"
    assert record["details"]["reason"] == "too_large"
    assert record["details"]["old_sha256"] == sha("a=1")
    assert diff(second, scanner.scan()) == []  # reported once, not at every scan
    plain.write_text("a=2")
    (record,) = diff(second, scanner.scan())
    assert record["action"] == "config.file.modified"
    assert record["details"]["old_reason"] == "too_large"
    assert record["details"]["new_sha256"] == sha("a=2")


def test_a_directory_swapped_for_a_link_after_the_check_is_caught_at_the_open(
    tmp_path: Path,
) -> None:
    """The race the realpath check alone would lose: the path is checked while `sub` is a
    directory in the volume, then `sub` becomes a link out of it before the file is opened.
    The check of what was opened (/proc/self/fd) refuses it."""
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "app.conf").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.conf").write_text("outside")
    scan = _Scan(Scanner([str(volume)]), {}, threading.Event())
    checked = str(volume / "sub" / "app.conf")  # what resolve() returned: inside
    (volume / "sub" / "app.conf").unlink()
    (volume / "sub").rmdir()
    (volume / "sub").symlink_to(outside)
    digest, _, _ = scan.hash(checked, checked, str(volume))
    assert digest is None
    assert scan.out == {checked: {"skipped": "outside_volume"}}


def test_dot_dot_names_are_skipped_only_in_a_kubelet_volume(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "..hidden.conf").write_text("h")
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.publish({"a": "1"})
    snapshot = Scanner([str(plain), str(volume.root)]).scan()
    assert set(snapshot) == {f"{plain}/..hidden.conf", f"{volume.root}/a"}


def test_link_loops_are_reported_and_dangling_links_are_absent(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "gone").symlink_to("nothing-here")
    snapshot = Scanner([str(tmp_path)]).scan()
    assert snapshot == {
        f"{tmp_path}/a": {"skipped": "symlink_loop"},
        f"{tmp_path}/b": {"skipped": "symlink_loop"},
    }
