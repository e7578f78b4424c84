"""WORM destinations for ledger objects, selected by URL scheme.

    >>> from auditlock import sinks
    >>> dest = sinks.open("file:///tmp/trail")       # or s3://bucket/prefix, gs://bucket/prefix

Each scheme's module is imported only when its URL is opened, so a sidecar writing to
s3:// never imports google-cloud-storage and one writing to gs:// never imports boto3.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from auditlock.sinks.base import (
    CheckReport,
    Destination,
    DestinationError,
    LockMode,
    ObjectConflict,
    ObjectNotFound,
    ObjectRetention,
    ObjectUnreadable,
    PutResult,
    RetentionSpec,
    TransientError,
)

__all__ = [
    "SCHEMES",
    "CheckReport",
    "Destination",
    "DestinationError",
    "LockMode",
    "ObjectConflict",
    "ObjectNotFound",
    "ObjectRetention",
    "ObjectUnreadable",
    "PutResult",
    "RetentionSpec",
    "TransientError",
    "open",
]

# scheme -> (module, class). Modules are imported on first use (see module docstring).
SCHEMES: dict[str, tuple[str, str]] = {
    "file": ("auditlock.sinks.file", "FileDestination"),
    "s3": ("auditlock.sinks.s3", "S3Destination"),
    "gs": ("auditlock.sinks.gcs", "GCSDestination"),
}


def open(url: str, **options: Any) -> Destination:  # shadows the builtin on purpose: sinks.open
    """Open the destination named by `url`; `options` are passed to that scheme's class.

    Raises DestinationError for an unknown scheme or a malformed URL, and when the client
    library a scheme needs is not installed (with the extra to install).
    """
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise DestinationError(f"unsupported destination URL {url!r}: use one of {known}")
    module_name, class_name = SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = {"s3": "s3", "gs": "gcs"}.get(scheme, "all")
        raise DestinationError(
            f"{scheme}:// needs a client library that is not installed ({exc.name}); "
            f"install it with: pip install 'auditlock[{extra}]'"
        ) from exc
    factory: Callable[..., Destination] = getattr(module, class_name)
    try:
        inspect.signature(factory).bind(url, **options)
    except TypeError as exc:
        raise DestinationError(f"{scheme}:// destination: {exc}") from exc
    return factory(url, **options)
