"""normalize → policy filter → redact: what every event goes through before the spool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from auditlock.ledger.canonical import canonical_bytes
from auditlock.sidecar.config import PipelineConfig, SourceIdentity
from auditlock.sidecar.pipeline.filter import PolicyFilter
from auditlock.sidecar.pipeline.normalize import Normalizer, Rejected
from auditlock.sidecar.pipeline.redact import Redactor

__all__ = ["Pipeline", "Processed", "Rejected"]


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

    def process_all(self, input_name: str, entries: Sequence[tuple[str, int, Any]]) -> Processed:
        """`process` over many entries, each kept event turned into its canonical bytes at
        once (what the spool stores).

        The per-event calls are looked up once (hot path), and no event dict outlives its
        own step: a read's thousand events alive together would be promoted through the
        cyclic garbage collector's generations and make its full collections frequent.
        """
        out = Processed()
        events = out.events
        rejected = out.rejected
        normalize = self.normalize
        keep = None if self.filter.keeps_everything else self.filter.keep
        redact = self.redactor.apply if self.redactor else None
        encode = canonical_bytes
        for index, (tag, time_ns, record) in enumerate(entries):
            try:
                event = normalize(input_name, tag, time_ns, record)
            except Rejected as exc:
                rejected.append((index, exc))
                continue
            if keep is not None and not keep(event):
                out.filtered += 1
                continue
            if redact is not None:
                redact(event)
            try:
                events.append(encode(event))
            except (TypeError, ValueError, OverflowError) as exc:  # a gap in validation
                out.unstorable.append(
                    Rejected("bad_value", "record", f"value cannot be stored: {exc}")
                )
        return out


@dataclass
class Processed:
    """What `process_all` made of a list of entries."""

    events: list[bytes] = field(default_factory=list)  # canonical bytes, to spool
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)  # (entry index, why)
    filtered: int = 0  # dropped by the policy filter
    unstorable: list[Rejected] = field(default_factory=list)  # valid but no canonical bytes
