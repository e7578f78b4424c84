"""`auditlock report`: verified trails in, one self-contained HTML file out.

    trails = [review.load(url, options) ...]      # verified, or from the cache
    html = render_report(trails, since_ns=..., until_ns=...)

The events come from the review cache (review.Engine over the loaded trails, narrowed to
the period), the checkpoint cadence from the signed checkpoints (checkpoints.py); data.py
aggregates, html.py and plots.py draw.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlock.ledger.timestamps import format_ns
from auditlock.report import data, html
from auditlock.report.checkpoints import signed_checkpoints, tracks
from auditlock.report.model import CheckpointTrack, ReportData

DEFAULT_TITLE = "Audit trail review"


def report_data(
    trails: Sequence[Any],
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    anchors: Sequence[Ed25519PublicKey] = (),
    title: str = DEFAULT_TITLE,
    slack_seconds: float | None = None,
    memory_limit: str | None = None,
) -> ReportData:
    """What the report shows; see the module docstring."""
    from auditlock.ledger.verify import DEFAULT_SLACK_SECONDS
    from auditlock.review.engine import Engine, Filters

    checkpoints: list[CheckpointTrack] = []
    for trail in trails:
        checkpoints += tracks(_checkpoints_of(trail, anchors), since_ns, until_ns)
    options: dict[str, Any] = {} if memory_limit is None else {"memory_limit": memory_limit}
    with Engine(trails, Filters(since_ns=since_ns, until_ns=until_ns), **options) as engine:
        return data.build(
            engine,
            trails,
            title=title,
            since_ns=since_ns,
            until_ns=until_ns,
            generated_at=format_ns(time.time_ns()),
            checkpoints=checkpoints,
            slack_seconds=DEFAULT_SLACK_SECONDS if slack_seconds is None else slack_seconds,
        )


def render_report(trails: Sequence[Any], **options: Any) -> str:
    """The report's HTML text."""
    return html.render(report_data(trails, **options))


def _checkpoints_of(trail: Any, anchors: Sequence[Ed25519PublicKey]) -> list[Any]:
    from auditlock import sinks

    destination = sinks.open(trail.url)
    try:
        return signed_checkpoints(destination, trail.report, anchors)
    finally:
        destination.close()
