"""What a report shows, as plain data: the verification summary, the series behind each
plot and the rows of each table.

`report/data.py` fills it from the verified-event cache (SQL); `report/html.py` renders
it. Every string here may come from the trail (events are hostile input): the renderers
escape it, nothing else needs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StreamRow:
    stream: str
    state: str  # open, closed, closed-abandoned
    epochs: int
    events: int
    checkpoints: int
    first_checkpoint: str | None
    last_checkpoint: str | None
    key_ids: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """A finding or warning of verification, or a reason events were left out."""

    code: str
    place: str
    message: str


@dataclass(frozen=True)
class Retention:
    objects: int
    modes: dict[str, int]  # lock mode ("COMPLIANCE", "Locked", "none", ...) -> objects
    earliest_retain_until: str | None
    legal_holds: int


@dataclass(frozen=True)
class Verification:
    urls: tuple[str, ...]
    result: str  # PASS or FAIL
    trust: str
    events_verified: int
    checkpoints_verified: int
    streams: tuple[StreamRow, ...]
    findings: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    excluded: tuple[Problem, ...]  # what the report does not count, and why
    retention: Retention | None

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted({k for s in self.streams for k in s.key_ids}))

    @property
    def gaps(self) -> tuple[Problem, ...]:
        return tuple(p for p in (*self.findings, *self.warnings) if p.code in GAP_CODES)


# Verification codes that mean "time or events are missing here" (FORMAT.md section 11).
GAP_CODES = frozenset(
    {"time-gap", "stream-stale", "epoch-missing", "restart", "events-missing",
     "checkpoint-missing", "no-checkpoint", "unsigned-events"}
)  # fmt: skip


@dataclass(frozen=True)
class CheckpointTrack:
    """One stream's checkpoint times, for the cadence plot."""

    stream: str
    times_ns: tuple[int, ...]
    heartbeat_ms: int


@dataclass(frozen=True)
class Change:
    """One row of a privileged-change table or of the configuration timeline."""

    time: str
    stream: str
    seq: int
    actor: str
    action: str
    outcome: str
    target: str
    detail: str = ""


@dataclass
class ReportData:
    title: str
    since: str | None
    until: str | None
    generated_at: str
    verification: Verification
    events: int  # events in the period the report counts
    first_event: str | None
    last_event: str | None
    bucket: str = (
        "hour"  # the time unit of per_hour and failures: "hour", or "day" for long periods
    )
    # (bucket start RFC 3339, category, events)
    per_hour: list[tuple[str, str, int]] = field(default_factory=list)
    # (bucket start, "failure" | "denial", events): a denial is a refused request (401/403,
    # an authorization decision "forbid"); every other failure is a failure
    failures: list[tuple[str, str, int]] = field(default_factory=list)
    top_actors: list[tuple[str, int]] = field(default_factory=list)
    secret_reads: list[tuple[str, int]] = field(default_factory=list)
    # (bucket start, resource kind, outcome, changes): the configuration-change timeline,
    # in buckets of a minute (a day or less of events), an hour (two weeks) or a day
    config_timeline: list[tuple[str, str, str, int]] = field(default_factory=list)
    checkpoints: list[CheckpointTrack] = field(default_factory=list)
    rbac_changes: list[Change] = field(default_factory=list)
    policy_changes: list[Change] = field(default_factory=list)
    exec_sessions: list[Change] = field(default_factory=list)
    slack_seconds: float = 30.0
    truncated: dict[str, int] = field(default_factory=dict)  # table -> rows not shown
