"""What `verify` found: findings (exit 1), warnings, per-stream and per-object facts.

The text forms (`describe`, `summary`) are for a person's terminal: every piece of text
that came from the store passes through `escape` (escape.py), so a planted object name or
message cannot drive the terminal. The JSON form carries the text as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from auditlock.ledger.escape import escape


@dataclass
class Finding:
    """One problem, named by place (stream, epoch, seq range, object) and reason."""

    code: str
    message: str
    stream: str | None = None
    epoch: int | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    object: str | None = None

    def place(self) -> str:
        parts = []
        if self.stream is not None:
            parts.append(f"stream {self.stream}")
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        if self.first_seq is not None:
            last = self.last_seq if self.last_seq is not None else self.first_seq
            parts.append(
                f"seq {self.first_seq}"
                if last == self.first_seq
                else f"seq {self.first_seq}-{last}"
            )
        if self.object is not None:
            parts.append(f"({self.object})")
        return escape(" ".join(parts) or "ledger")

    def describe(self) -> str:
        return f"{self.place()}: {escape(self.message)} [{escape(self.code)}]"


@dataclass
class StreamSummary:
    stream: str
    epochs: int = 0
    events: int = 0
    checkpoints: int = 0
    closed: bool = False  # the newest epoch ends with its writer's `close`
    abandoned: bool = False  # ... with an `abandon`: the writer is gone for good
    first_checkpoint_time: str | None = None
    last_checkpoint_time: str | None = None
    key_ids: list[str] = field(default_factory=list)
    # events stored, by who observed them (observer.py): an app's claims apart from what
    # auditlock's own intakes saw
    observers: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return "closed" if self.closed else "closed-abandoned" if self.abandoned else "open"


STREAM_STATES = ("closed", "closed-abandoned", "open")


@dataclass
class ObjectInfo:
    name: str
    mode: str | None
    retain_until: str | None
    legal_hold: bool


@dataclass
class VerifyReport:
    url: str
    findings: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    streams: list[StreamSummary] = field(default_factory=list)
    objects: list[ObjectInfo] = field(default_factory=list)
    events_verified: int = 0
    checkpoints_verified: int = 0
    trust: str = ""
    witness: list[str] = field(default_factory=list)  # step 6: one line per witness

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "result": "PASS" if self.ok else "FAIL",
            "trust": self.trust,
            **({"witness": self.witness} if self.witness else {}),
            "events_verified": self.events_verified,
            "checkpoints_verified": self.checkpoints_verified,
            "findings": [asdict(f) for f in self.findings],
            "warnings": [asdict(w) for w in self.warnings],
            "stream_counts": self.stream_counts(),
            "streams": [{**asdict(s), "state": s.state} for s in self.streams],
            "objects": [asdict(o) for o in self.objects],
        }

    def stream_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STREAM_STATES, 0)
        for s in self.streams:
            counts[s.state] += 1
        return counts

    def summary(self) -> str:
        counts = self.stream_counts()
        abandoned = counts["closed-abandoned"]
        lines = [
            f"{'PASS' if self.ok else 'FAIL'}: {escape(self.url)}: {len(self.streams)} streams "
            f"({counts['closed']} closed, "
            f"{f'{abandoned} closed-abandoned, ' if abandoned else ''}{counts['open']} open), "
            f"{self.events_verified} events and {self.checkpoints_verified} checkpoints verified",
            f"trust: {escape(self.trust)}",
        ]
        lines += [f"{escape(line)}" for line in self.witness]
        for s in self.streams:
            observed = ", ".join(f"{n} {who}" for who, n in sorted(s.observers.items()))
            lines.append(
                f"  stream {escape(s.stream)}: {s.state}, {s.epochs} epoch(s), {s.events} events "
                f"verified, {s.checkpoints} checkpoints, last checkpoint "
                f"{escape(str(s.last_checkpoint_time))}"
                + (f"; observed by: {observed}" if observed else "")
            )
        if self.objects:
            modes: dict[str, int] = {}
            for o in self.objects:
                mode = escape(o.mode or "none")
                modes[mode] = modes.get(mode, 0) + 1
            until = [o.retain_until for o in self.objects if o.retain_until]
            held = sum(1 for o in self.objects if o.legal_hold)
            lines.append(
                "  retention: "
                + ", ".join(f"{n} {m}" for m, n in sorted(modes.items()))
                + (f"; earliest retain-until {escape(min(until))}" if until else "")
                + f"; legal hold on {held} of {len(self.objects)} objects"
            )
        for w in self.warnings:
            lines.append(f"warning: {w.describe()}")
        for f in self.findings:
            lines.append(f"problem: {f.describe()}")
        return "\n".join(lines)
