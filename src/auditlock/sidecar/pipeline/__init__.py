"""normalize → policy filter → redact: what every event goes through before the spool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditlock.sidecar.config import PipelineConfig, SourceIdentity
from auditlock.sidecar.pipeline.filter import PolicyFilter
from auditlock.sidecar.pipeline.normalize import Normalizer, Rejected
from auditlock.sidecar.pipeline.redact import Redactor

__all__ = ["Pipeline", "Rejected"]


class Pipeline:
    def __init__(self, config: PipelineConfig, identity: SourceIdentity) -> None:
        self.normalize = Normalizer(identity)
        self.filter = PolicyFilter(config)
        self.redactor = Redactor(config.redact)

    def process(
        self, input_name: str, tag: str, time_ns: int, record: Any
    ) -> dict[str, Any] | None:
        """The event to spool, None when the policy filters it out; raises Rejected."""
        event = self.normalize(input_name, tag, time_ns, record)
        if not self.filter.keep(event):
            return None
        if self.redactor:
            self.redactor.apply(event)
        return event

    def process_all(
        self, input_name: str, entries: Sequence[tuple[str, int, Any]]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, Rejected]], int]:
        """`process` over many entries: (events to spool, (index, rejection)s, filtered).

        The same steps as `process`, with the per-event calls looked up once (hot path).
        """
        events: list[dict[str, Any]] = []
        rejected: list[tuple[int, Rejected]] = []
        filtered = 0
        normalize = self.normalize
        keep = None if self.filter.keeps_everything else self.filter.keep
        redact = self.redactor.apply if self.redactor else None
        append = events.append
        for index, (tag, time_ns, record) in enumerate(entries):
            try:
                event = normalize(input_name, tag, time_ns, record)
            except Rejected as exc:
                rejected.append((index, exc))
                continue
            if keep is not None and not keep(event):
                filtered += 1
                continue
            if redact is not None:
                redact(event)
            append(event)
        return events, rejected, filtered
