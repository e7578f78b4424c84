"""normalize → policy filter → redact: what every event goes through before the spool."""

from __future__ import annotations

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
