"""How a verification step says what it found (docs/FORMAT.md section 11).

Every step returns a list of `Finding`s (report.py); a `WarningFinding` is one that never
fails verification (FORMAT.md marks those codes "(warning)"). `Place` names where a step
is looking, so a step writes `place.find("tree-shrank", ...)` (or `place.warn`) and the
stream and epoch come with it. `Notes` takes what the steps return, in order, into the
report: it applies the per-stream backstop (`truncated-report` after 100 findings) and
turns an error no rule foresaw into the finding `verify-error` (`guard`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from auditlock.ledger.report import Finding, VerifyReport

MAX_FINDINGS_PER_STREAM = 100


class WarningFinding(Finding):
    """A finding that never fails verification (FORMAT.md: "(warning)")."""


@dataclass(frozen=True)
class Place:
    """Where a step is looking: a stream and, inside it, an epoch."""

    stream: str | None = None
    epoch: int | None = None

    def find(self, code: str, message: str, **where: object) -> Finding:
        return Finding(code, message, stream=self.stream, epoch=self.epoch, **where)  # type: ignore[arg-type]

    def warn(self, code: str, message: str, **where: object) -> WarningFinding:
        return WarningFinding(code, message, stream=self.stream, epoch=self.epoch, **where)  # type: ignore[arg-type]


class Notes:
    """Takes what the steps return into the report's findings and warnings, in order."""

    def __init__(self, report: VerifyReport) -> None:
        self.findings = report.findings
        self.warnings = report.warnings
        self._in_stream = 0  # findings of the current stream so far

    def new_stream(self) -> None:
        self._in_stream = 0

    def add(self, notes: Iterable[Finding]) -> None:
        for note in notes:
            if isinstance(note, WarningFinding):
                self.warnings.append(Finding(**asdict(note)))
            else:
                self._add_finding(note)

    def _add_finding(self, finding: Finding) -> None:
        if finding.stream is not None:
            self._in_stream += 1
            if self._in_stream == MAX_FINDINGS_PER_STREAM + 1:
                code = "truncated-report"
                finding = Finding(
                    code,
                    "too many problems in this stream; the rest are not listed",
                    finding.stream,
                    finding.epoch,
                    finding.first_seq,
                    finding.last_seq,
                    finding.object,
                )
            elif self._in_stream > MAX_FINDINGS_PER_STREAM + 1:
                return
        self.findings.append(finding)

    @contextlib.contextmanager
    def guard(self, place: Place = Place(), **where: object) -> Iterator[None]:
        """Turn an error nothing foresaw into a finding naming the place: a bug, or input
        no rule covers yet, must never take the rest of the report down with it."""
        try:
            yield
        except Exception as exc:
            message = f"could not be checked: {describe(exc)}"
            self.add([place.find("verify-error", message, **where)])


def describe(exc: BaseException) -> str:
    """An exception as one bounded line: its type and the start of its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def shown(value: object) -> str:
    """A value from a hostile line, for a message: short scalars only (repr() of a deeply
    nested planted value would recurse, and a huge one would flood the report)."""
    if isinstance(value, str):
        return repr(value[:80]) + ("…" if len(value) > 80 else "")
    if value is None or isinstance(value, bool | int):
        return repr(value)[:40]
    return f"a JSON {type(value).__name__}"


def holes(present: list[int]) -> str:
    """The numbers missing from 0..max(present) as ranges ("3, 5-9"); "" if none.

    Works from the sorted list, never materialising 0..max: a corrupt or planted name
    may carry a huge number."""
    out: list[str] = []
    expected = 0
    for n in present:
        if n > expected:
            out.append(str(expected) if n - 1 == expected else f"{expected}-{n - 1}")
        expected = max(expected, n + 1)
    return ", ".join(out)
