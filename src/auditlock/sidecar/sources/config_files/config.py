"""The config-file watcher's section of the collector config (`sources.config_files`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge

from auditlock.sidecar.config_fields import FORBID_EXTRA, Positive


@dataclass(frozen=True, slots=True)
class ConfigFilesSource:
    """Watches mounted files (ConfigMap/Secret volumes); records hashes, never contents."""

    __pydantic_config__ = FORBID_EXTRA

    enabled: bool = False
    paths: list[str] = field(default_factory=list)  # files or directories
    poll_seconds: Positive = 2.0
    # Entries (files and directories) examined per scan; past it the rest is reported
    # as skipped. Bounds the scan's memory and time whatever a folder holds.
    max_files: Annotated[int, Ge(1)] = 10_000
    # Larger files are reported as skipped, not hashed (ConfigMaps and Secrets hold 1 MiB).
    max_file_bytes: Annotated[int, Ge(1)] = 8 * 1024 * 1024
