"""Object names every destination accepts.

Ledger object names are deterministic relative paths such as
`streams/<stream>/segments/00000000000000000042.jsonl`. The same rules apply to every
scheme so a trail can be copied between stores unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

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


@dataclass(frozen=True)
class BucketUrl:
    bucket: str
    prefix: str  # '' or 'a/b': no leading or trailing slash
    query: dict[str, str]  # the last value of each parameter


def parse_bucket_url(url: str, scheme: str, known: Iterable[str]) -> BucketUrl:
    """What `scheme://BUCKET[/PREFIX][?key=value&...]` names; DestinationError for another
    form or a parameter not in `known`."""
    parts = urlsplit(url)
    if parts.scheme != scheme or not parts.netloc:
        raise DestinationError(f"not a URL of the form {scheme}://BUCKET[/PREFIX]: {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - set(known)
    if unknown:
        raise DestinationError(
            f"unknown {scheme}:// URL parameter(s) {sorted(unknown)}; known: {sorted(known)}"
        )
    return BucketUrl(parts.netloc, parts.path.strip("/"), query)
