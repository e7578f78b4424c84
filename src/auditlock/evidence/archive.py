"""The evidence package's container: a gzip-compressed tar of regular files.

Written deterministically (names sorted, fixed owner and mode, one mtime, gzip without a
timestamp), so the same contents give the same bytes.

Read as hostile input. Nothing is ever extracted to disk: members are read into memory
by name, so path traversal and links cannot reach the file system. Even so a member must
be a regular file with a plain relative name (no `..`, no absolute path, no link, device
or directory entry, no name twice), and everything is bounded: the number of members, each
member's size and the total inflated size are checked while reading, so a tar or gzip
bomb stops at the limit instead of filling memory.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from auditlock.evidence.errors import EvidenceError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*\Z")
MAX_NAME = 512


@dataclass(frozen=True)
class Limits:
    members: int = 100_000
    member_bytes: int = 64 << 20
    total_bytes: int = 512 << 20  # inflated: the tar stream, headers included


def write_archive(path: Path, members: dict[str, bytes], mtime: int) -> bytes:
    """Write `members` to `path` (whole or not at all); return the archive's bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            check_name(name)
            data = members[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(packed)
    tmp.replace(path)
    return packed


def read_archive(path: Path, limits: Limits | None = None) -> dict[str, bytes]:
    """Every member's bytes by name; EvidenceError (archive-corrupt, archive-too-large,
    member-unsafe, member-duplicate) for anything else."""
    limits = limits or Limits()
    members: dict[str, bytes] = {}
    try:
        with path.open("rb") as raw:
            stream = _Bounded(gzip.GzipFile(fileobj=raw, mode="rb"), limits.total_bytes)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    _admit(info, members, limits)
                    handle = tar.extractfile(info)
                    assert handle is not None  # a regular file, checked by _admit
                    data = handle.read(info.size + 1)
                    if len(data) != info.size:
                        raise EvidenceError("archive-corrupt", f"member {info.name!r} is truncated")
                    members[info.name] = data
    except EvidenceError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise EvidenceError("archive-corrupt", f"not a readable .tar.gz ({exc})") from None
    except OSError as exc:
        raise EvidenceError("archive-corrupt", f"cannot read the archive ({exc})") from None
    return members


def check_name(name: str) -> None:
    if len(name) > MAX_NAME or not NAME.match(name) or ".." in name.split("/"):
        raise EvidenceError(
            "member-unsafe", f"member name {name[:80]!r} is not a plain relative path"
        )


def _admit(info: tarfile.TarInfo, members: dict[str, bytes], limits: Limits) -> None:
    if len(members) >= limits.members:
        raise EvidenceError("archive-too-large", f"more than {limits.members} members")
    check_name(info.name)
    if not info.isreg():
        kind = (
            "link"
            if info.issym() or info.islnk()
            else "directory"
            if info.isdir()
            else "special file"
        )
        raise EvidenceError(
            "member-unsafe", f"member {info.name!r} is a {kind}, not a regular file"
        )
    if info.name in members:
        raise EvidenceError("member-duplicate", f"member {info.name!r} appears twice")
    if info.size > limits.member_bytes:
        raise EvidenceError(
            "archive-too-large", f"member {info.name!r} is {info.size} bytes, more than "
            f"{limits.member_bytes}"
        )  # fmt: skip


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Bounded(io.RawIOBase):
    """Reads through to `inner`, failing once more than `limit` bytes came out of it."""

    def __init__(self, inner: _Readable, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.seen += len(data)
        if self.seen > self.limit:
            raise EvidenceError(
                "archive-too-large", f"the archive inflates to more than {self.limit} bytes"
            )
        buffer[: len(data)] = data
        return len(data)
