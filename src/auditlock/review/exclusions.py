"""What a review answer leaves out, and why (docs/review.md, "What is excluded").

Verification accepts a line only when a signed checkpoint root vouches for it with no
broken line since the checkpoint before (FORMAT.md 11.3.4). Everything else stored is
excluded from the table: altered, spliced, duplicated or unsigned lines, and the intact
lines of an interval that holds a broken one. Per stream this module sets the events
stored in segments beside the events accepted, and lists the findings and warnings of
that stream, which name the epochs and sequence ranges and say why. Findings about the
whole trail (keys, rotations, unexpected objects) are listed apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from auditlock.ledger.names import parse_name


def stored_events(names: Iterable[str]) -> dict[str, int]:
    """Per stream, the events its segment names say are stored (overlaps counted once)."""
    ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for name in names:
        parsed = parse_name(name)
        if parsed is not None and parsed.kind == "segment" and parsed.first <= parsed.last:
            ranges.setdefault((parsed.stream, parsed.epoch), []).append((parsed.first, parsed.last))
    stored: dict[str, int] = {}
    for (stream, _), spans in ranges.items():
        count, end = 0, -1
        for first, last in sorted(spans):
            if last > end:
                count += last - max(first, end + 1) + 1
                end = last
        stored[stream] = stored.get(stream, 0) + count
    return stored


def exclusions(
    report: dict[str, Any], stored: dict[str, int], accepted: dict[str, int]
) -> dict[str, Any]:
    """{"events": N excluded, "streams": [...], "trail_findings": [...]} (docs/review.md)."""
    by_stream: dict[str, list[dict[str, Any]]] = {}
    trail: list[dict[str, Any]] = []
    for kind, items in (
        ("finding", report.get("findings", [])),
        ("warning", report.get("warnings", [])),
    ):
        for item in items:
            entry = {"kind": kind, **item}
            if item.get("stream") is None:
                if kind == "finding":
                    trail.append(entry)
            else:
                by_stream.setdefault(item["stream"], []).append(entry)
    streams = []
    total = 0
    for stream in sorted(set(stored) | set(accepted) | set(by_stream)):
        kept = accepted.get(stream, 0)
        excluded = max(stored.get(stream, 0) - kept, 0)
        reasons = by_stream.get(stream, [])
        if excluded or any(r["kind"] == "finding" for r in reasons):
            streams.append(
                {"stream": stream, "stored": stored.get(stream, 0), "accepted": kept,
                 "excluded": excluded, "reasons": reasons}
            )  # fmt: skip
        total += excluded
    return {"events": total, "streams": streams, "trail_findings": trail}
