"""Object names every destination accepts.

Ledger object names are deterministic relative paths such as
`streams/<stream>/segments/00000000000000000042.jsonl`. The same rules apply to every
scheme so a trail can be copied between stores unchanged.
"""

from __future__ import annotations

from auditlock.sinks.base import DestinationError

MAX_NAME_BYTES = 900  # below GCS's 1024-byte limit and S3's 1024 after a prefix


def validate_name(name: str) -> str:
    """Return `name` unchanged if it is a safe relative object name, else raise."""
    if not name:
        raise DestinationError("object name is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a file:// name that is not UTF-8 (surrogate escapes)
        raise DestinationError(f"object name {name!r} is not UTF-8 text") from None
    if size > MAX_NAME_BYTES:
        raise DestinationError(f"object name is longer than {MAX_NAME_BYTES} bytes: {name[:60]!r}")
    if name.startswith("/") or name.endswith("/"):
        raise DestinationError(f"object name {name!r} must not start or end with '/'")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise DestinationError(f"object name {name!r} contains a control character")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise DestinationError(f"object name {name!r} has an empty, '.' or '..' segment")
    return name


def join_prefix(prefix: str, name: str) -> str:
    """The store key for `name` under a URL prefix ('' or 'a/b')."""
    return f"{prefix}/{name}" if prefix else name


def clean_prefix(path: str) -> str:
    """The prefix part of a bucket URL path, without leading/trailing slashes."""
    return path.strip("/")
