"""The local cache of verified events (docs/review.md, "The cache and who can change it").

A cache entry is the `events` table of one trail as Parquet files plus a manifest (the
verify report and what was excluded), written only by the loader after verification and
named by a key that commits to everything verification depended on:

* the URL and the ids of the `--public-key`s (another trust anchor is another verdict);
* the digest of the store's whole listing (an object added, deleted or renamed);
* the digest of the newest checkpoint of every epoch of every stream (each checkpoint
  commits to the one before it, and its root to the events it covers);
* the loader's table version.

A trail that grew, lost an object or gained one gets a new key and is verified again;
an unchanged one is answered from the entry without reading a segment. Computing the key
costs one listing and one small read per epoch.

The cache lives outside the trail (a `file://` store may not contain it), in a
directory only its owner can write (else it is not used: anyone able to write it could
make queries answer what they like). An entry is written under a temporary name and
renamed into place, so a crash never leaves a half entry under a key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditlock.ledger.checkpoint import decode_checkpoint
from auditlock.ledger.errors import FormatError
from auditlock.ledger.keys import key_id
from auditlock.ledger.limits import MAX_CHECKPOINT_BYTES
from auditlock.ledger.names import ObjectName, parse_name
from auditlock.sinks.base import Destination, DestinationError

CACHE_FORMAT = "auditlock/review-cache/v1"  # bump when the table or the key changes
MANIFEST = "manifest.json"
ENV_CACHE_DIR = "AUDITLOCK_CACHE_DIR"


class CacheUnsafe(Exception):
    """The cache directory cannot be trusted (owner, mode, or inside the trail)."""


def default_root() -> Path:
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auditlock" / "review"


@dataclass(frozen=True)
class TrailState:
    """What the cache key is computed from (see the module docstring)."""

    url: str
    anchors: tuple[str, ...]
    listing_digest: str
    newest: tuple[tuple[str, int, str, str], ...]  # (stream, epoch, object name, digest)
    names: tuple[str, ...] = field(default=(), compare=False)  # the listing itself
    # When the first open stream's heartbeat falls due (its newest checkpoint's time plus
    # heartbeat_ms, in ns); None: every stream is closed. Not part of the key: past it,
    # verify would say `stream-stale`, so an entry is not reused (see `usable`).
    heartbeat_due_ns: int | None = field(default=None, compare=False)

    def usable(self, now_ns: int, slack_seconds: float) -> bool:
        """Whether a cached verdict still holds now: no open stream's heartbeat is
        overdue beyond the slack verify allows (FORMAT.md 11.3.5, `stream-stale`)."""
        due = self.heartbeat_due_ns
        return due is None or now_ns <= due + int(slack_seconds * 1e9)

    @property
    def key(self) -> str:
        body = json.dumps(
            {
                "format": CACHE_FORMAT,
                "url": self.url,
                "anchors": list(self.anchors),
                "listing": self.listing_digest,
                "newest": [list(n) for n in self.newest],
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()


def trail_state(destination: Destination, anchors: Iterable[Any]) -> TrailState:
    """List the store and read each epoch's newest checkpoint (bounded reads)."""
    names = sorted(destination.list(""))
    listing = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    newest: dict[tuple[str, int], ObjectName] = {}
    # The newest checkpoint of an epoch is the last valid checkpoint name in its directory
    # (fixed-width numbers: lexical order is numeric order, FORMAT.md section 2). Walking
    # the sorted listing backwards parses one name per epoch, not every name of the trail.
    found: set[str] = set()
    for name in reversed(names):
        directory, _, base = name.rpartition("/")
        if directory in found or not base.endswith(".ckpt"):
            continue
        parsed = parse_name(name)
        if parsed is not None and parsed.kind == "checkpoint":
            newest[(parsed.stream, parsed.epoch)] = parsed
            found.add(directory)
    digests = []
    last_epoch = {stream: epoch for stream, epoch in sorted(newest)}
    due: int | None = None
    for (stream, epoch), obj in sorted(newest.items()):
        try:
            data = destination.get(obj.name, max_bytes=MAX_CHECKPOINT_BYTES)
            digest = hashlib.sha256(data).hexdigest()
        except DestinationError as exc:  # verify will say what is wrong; the key differs
            data, digest = b"", "unreadable:" + type(exc).__name__
        digests.append((stream, epoch, obj.name, digest))
        if epoch == last_epoch[stream]:
            open_due = _heartbeat_due(data)
            if open_due is not None:
                due = open_due if due is None else min(due, open_due)
    return TrailState(
        url=destination.url,
        anchors=tuple(sorted(key_id(k) for k in anchors)),
        listing_digest=listing,
        newest=tuple(digests),
        names=tuple(names),
        heartbeat_due_ns=due,
    )


def _heartbeat_due(data: bytes) -> int | None:
    """When the next checkpoint of an open stream is due; None if closed or unreadable
    (an unreadable newest checkpoint is verify's to report, and changes the key)."""
    try:
        checkpoint = decode_checkpoint(data).checkpoint
    except FormatError:
        return None
    if checkpoint.closed:
        return None
    return checkpoint.time_ns + checkpoint.heartbeat_ms * 1_000_000


def check_root(root: Path, trail_root: Path | None) -> Path:
    """Create the cache root if needed (mode 0700) and refuse one others could write, or
    one inside a `file://` trail. Returns the resolved root."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    resolved = root.resolve()
    if trail_root is not None:
        trail = trail_root.resolve()
        if resolved == trail or trail in resolved.parents:
            raise CacheUnsafe(f"cache directory {resolved} is inside the trail {trail}")
    info = resolved.stat()
    if info.st_uid != os.getuid():
        raise CacheUnsafe(f"{resolved} is owned by uid {info.st_uid}, not by you")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheUnsafe(f"{resolved} can be written by others ({stat.filemode(info.st_mode)})")
    # Every directory above it: owned by you or root, and not writable by others unless
    # sticky (like /tmp), so nobody else can swap the cache for another directory.
    for directory in resolved.parents:
        info = directory.stat()
        if info.st_uid not in (0, os.getuid()):
            raise CacheUnsafe(f"{directory} is owned by uid {info.st_uid}")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            mode = stat.filemode(info.st_mode)
            raise CacheUnsafe(f"{directory} can be written by others ({mode})")
    return resolved


@dataclass
class Entry:
    """A complete cache entry: its directory, manifest and Parquet files."""

    path: Path
    manifest: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        return [self.path / name for name in self.manifest["files"]]


def lookup(root: Path, key: str) -> Entry | None:
    path = root / key
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None
    if manifest.get("format") != CACHE_FORMAT:
        return None
    files = manifest.get("files")
    seals = manifest.get("seals")
    if not isinstance(files, list) or not isinstance(seals, dict):
        return None
    for name in files:
        if not isinstance(name, str) or "/" in name or seals.get(name) != _seal(path / name):
            return None
    return Entry(path, manifest)


def _seal(path: Path) -> list[int] | None:
    """What a part's stat says about its content: a part rewritten, truncated or replaced
    after the entry was written has another size, inode or change time (the change time
    cannot be set back, unlike the modification time). A stat, not a digest: hashing the
    parts would cost more than the query it saves."""
    try:
        info = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return [info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns]


class Staging:
    """A cache entry being written: files go into a private temporary directory that
    `commit` renames to the key (or `discard` removes)."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.key = key
        self.path = Path(tempfile.mkdtemp(prefix=f".staging-{key[:16]}-", dir=root))

    def commit(self, manifest: dict[str, Any]) -> Entry:
        manifest = {"format": CACHE_FORMAT, "key": self.key, **manifest}
        manifest["seals"] = {name: _seal(self.path / name) for name in manifest["files"]}
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=1))
        final = self.root / self.key
        if final.exists():  # a concurrent load of the same trail finished first
            shutil.rmtree(final, ignore_errors=True)
        os.replace(self.path, final)
        return Entry(final, manifest)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def prune(root: Path, url: str, anchors: list[str], keep: str) -> None:
    """Remove older entries of the same trail and trust (a grown trail's previous key)."""
    for child in root.iterdir():
        if child.name == keep or child.name.startswith("."):
            continue
        entry = lookup(root, child.name)
        if entry and entry.manifest.get("url") == url and entry.manifest.get("anchors") == anchors:
            shutil.rmtree(child, ignore_errors=True)
