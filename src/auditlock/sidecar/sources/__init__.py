"""Where events enter the sidecar: Forward, HTTP, mounted config files, the access proxy.

A source speaks one protocol and nothing else. It turns what it receives into raw
records and hands them to the intake (`auditlock.sidecar.intake.Intake`), which
normalizes, filters, redacts, deduplicates and spools them; a source acknowledges its
sender only after the intake says they are durable. Each source keeps its config class
beside its code (`config.py` in its package) and is listed in `SOURCES`, the table the
collector starts its sources from (app.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from auditlock.sidecar.intake import Intake


class Source(Protocol):
    """What the collector needs of a source: built from its config and the context,
    started once everything behind the intake is up, stopped before the spool closes."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What every source is built with besides its own config."""

    intake: Intake
    state_dir: Path  # a directory for a source's own state (the spool's)
    private: list[Path] = field(default_factory=list)  # the collector's files: never read


# The `sources` section's field → the class serving it ("module:class"), imported only
# when that source is enabled (the collector's memory: docs/architecture.md). Started in
# this order, stopped in reverse.
SOURCES: dict[str, str] = {
    "forward": "auditlock.sidecar.sources.forward.server:ForwardServer",
    "http": "auditlock.sidecar.sources.http.server:HttpIntake",
    "config_files": "auditlock.sidecar.sources.config_files.watcher:ConfigFileWatcher",
    "access_proxy": "auditlock.sidecar.sources.access_proxy.proxy:AccessProxy",
}


def build_sources(sources_config: Any, context: SourceContext) -> list[Source]:
    """The enabled sources of a `sources` config section, in `SOURCES` order."""
    built: list[Source] = []
    for name, target in SOURCES.items():
        config = getattr(sources_config, name)
        if not config.enabled:
            continue
        module, _, cls = target.partition(":")
        built.append(getattr(importlib.import_module(module), cls)(config, context))
    return built
