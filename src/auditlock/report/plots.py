"""The report's plots, drawn with matplotlib as SVG text to inline in the HTML.

Why matplotlib and SVG (docs/review.md, "The report"): the report must open with no
network and print to PDF; an inline SVG needs no JavaScript at all (the page can forbid
scripts outright), stays sharp on paper, and weighs tens of kilobytes per plot, where a
JavaScript plotting library inlined would add megabytes to every report.

Labels come from the trail and are hostile: they are shown through `ledger.escape`
(controls and bidi marks made visible), cut to a readable length, drawn with math text
off (a `$` in an actor name is a dollar sign, not TeX), and matplotlib's SVG writer
escapes them as XML. Every data mark carries an id starting with `data-`, so a test can
ask the rendered page whether a plot drew anything.
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from auditlock.ledger.escape import escape
from auditlock.ledger.vocabulary import CATEGORIES
from auditlock.report.model import CheckpointTrack

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LABEL_CHARS = 40
WIDTH_IN = 9.0
# One colour per category, kept across reports (the Okabe-Ito palette: readable for
# colour-blind readers and in greyscale print).
CATEGORY_COLOURS = {
    "access": "#0072B2",
    "authorization": "#D55E00",
    "data": "#009E73",
    "configuration": "#CC79A7",
    "alert": "#E69F00",
}
FAILURE_COLOURS = {"failure": "#E69F00", "denial": "#D55E00"}
GAP_COLOUR = "#D55E00"


def label(text: str) -> str:
    """A trail string as a plot label: escaped and no longer than LABEL_CHARS."""
    shown = escape(text)
    return shown if len(shown) <= LABEL_CHARS else shown[: LABEL_CHARS - 1] + "…"


def events_per_hour(rows: Sequence[tuple[str, str, int]], bucket: str = "hour") -> str | None:
    """Stacked bars: events per hour (minute, day), one colour per category."""
    if not rows:
        return None
    hours = sorted({_num(_time(h)) for h, _, _ in rows})
    counts: dict[str, dict[float, int]] = defaultdict(dict)
    for hour, category, n in rows:
        counts[category][_num(_time(hour))] = n
    with _figure("events-per-hour", 3.2) as (fig, ax):
        bottom = [0] * len(hours)
        width = _width(bucket)
        ordered = [c for c in CATEGORIES if c in counts] + sorted(set(counts) - set(CATEGORIES))
        for number, category in enumerate(ordered):
            values = [counts[category].get(h, 0) for h in hours]
            bars = ax.bar(hours, values, width=width, bottom=bottom, align="edge",
                          label=label(category),
                          color=CATEGORY_COLOURS.get(category, "#999999"))  # fmt: skip
            _mark(bars, f"data-category{number}")
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_ylabel(f"events per {bucket}")
        _integer_ticks(ax.yaxis)
        _time_axis(ax, hours, width)
        _legend_above(ax, ncols=5)
        return _svg(fig)


def failures_over_time(rows: Sequence[tuple[str, str, int]], bucket: str = "hour") -> str | None:
    """Failures and denials per hour (minute, day), side by side."""
    if not rows:
        return None
    width = _width(bucket) / 2
    starts = [_num(_time(h)) for h, _, _ in rows]
    with _figure("failures", 2.8) as (fig, ax):
        for offset, kind in enumerate(("failure", "denial")):
            values = {_time(h): n for h, k, n in rows if k == kind}
            if not values:
                continue
            xs = sorted(values)
            shifted = [_num(x) + offset * width for x in xs]
            bars = ax.bar(shifted, [values[x] for x in xs], width=width, align="edge",
                          color=FAILURE_COLOURS[kind],
                          label="denials (401/403, forbid)" if kind == "denial"
                          else "other failures")  # fmt: skip
            _mark(bars, f"data-{kind}")
        ax.set_ylabel(f"events per {bucket}")
        _integer_ticks(ax.yaxis)
        _time_axis(ax, starts, 2 * width)
        _legend_above(ax, ncols=2)
        return _svg(fig)


def ranked_bars(plot_id: str, rows: Sequence[tuple[str, int]], xlabel: str) -> str | None:
    """Horizontal bars, largest first (top actors, Secret reads by actor)."""
    if not rows:
        return None
    names = [label(name) for name, _ in rows][::-1]
    values = [n for _, n in rows][::-1]
    with _figure(plot_id, 0.8 + 0.28 * len(rows)) as (fig, ax):
        bars = ax.barh(range(len(rows)), values, color="#0072B2")
        _mark(bars, "data-bar")
        ax.set_yticks(range(len(rows)), names, fontsize=8)
        ax.set_xlabel(xlabel)
        _integer_ticks(ax.xaxis)
        for y, value in enumerate(values):
            ax.annotate(f"{value:,}", (value, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)  # fmt: skip
        return _svg(fig)


def change_timeline(rows: Sequence[tuple[str, str, str, int]]) -> str | None:
    """Configuration changes: a dot per time bucket and kind of target, its area growing
    with the number of changes in it."""
    if not rows:
        return None
    kinds = sorted({kind for _, kind, _, _ in rows})
    place = {kind: i for i, kind in enumerate(kinds)}
    biggest = max(n for *_, n in rows)
    colours = {"success": "#009E73", "failure": "#D55E00"}
    xs = [_num(_time(t)) for t, _, _, _ in rows]
    with _figure("config-timeline", 0.9 + 0.3 * len(kinds)) as (fig, ax):
        for outcome in sorted({o for _, _, o, _ in rows}):
            picked = [r for r in rows if r[2] == outcome]
            dots = ax.scatter(
                [_num(_time(t)) for t, _, _, _ in picked],
                [place[kind] for _, kind, _, _ in picked],
                s=[12 + 100 * (n / biggest) for *_, n in picked],
                color=colours.get(outcome, "#999999"), alpha=0.8,
                label=label(outcome), zorder=3,
            )  # fmt: skip
            dots.set_gid(f"data-change-{outcome}")
        ax.set_yticks(range(len(kinds)), [label(k) for k in kinds], fontsize=8)
        ax.set_ylim(-0.7, len(kinds) - 0.3)
        _time_axis(ax, xs)
        ax.grid(axis="y", color="#eeeeee")
        _legend_above(ax, ncols=3)
        return _svg(fig)


def checkpoint_cadence(tracks: Sequence[CheckpointTrack], slack_seconds: float) -> str | None:
    """One row per stream: a tick per checkpoint, and in red every stretch longer than
    the stream's heartbeat plus slack with no checkpoint (what verify calls a gap)."""
    tracks = [t for t in tracks if t.times_ns]
    if not tracks:
        return None
    with _figure("checkpoint-cadence", 0.9 + 0.35 * len(tracks)) as (fig, ax):
        gaps_drawn = False
        for row, track in enumerate(tracks):
            times = [_from_ns(t) for t in track.times_ns]
            ticks = ax.scatter(times, [row] * len(times), marker="|", s=120, color="#0072B2",
                               linewidths=1)  # fmt: skip
            ticks.set_gid(f"data-checkpoints-{row}")
            allowed_ns = track.heartbeat_ms * 1_000_000 + int(slack_seconds * 1e9)
            for before, after in zip(track.times_ns, track.times_ns[1:], strict=False):
                if after - before > allowed_ns:
                    start = _from_ns(before)
                    span = ax.broken_barh([(start, _from_ns(after) - start)], (row - 0.35, 0.7),
                                          color=GAP_COLOUR, alpha=0.6,
                                          label=None if gaps_drawn else "gap")  # fmt: skip
                    span.set_gid(f"data-gap-{row}")
                    gaps_drawn = True
        ax.set_yticks(range(len(tracks)), [label(t.stream) for t in tracks], fontsize=8)
        ax.set_ylim(-0.7, len(tracks) - 0.3)
        _time_axis(
            ax, [_from_ns(t) for track in tracks for t in (track.times_ns[0], track.times_ns[-1])]
        )
        if gaps_drawn:
            _legend_above(ax, ncols=1)
        return _svg(fig)


# -- helpers --------------------------------------------------------------------------------

_HOUR = 1 / 24  # matplotlib's date unit is the day
_MINUTE = _HOUR / 60


@contextmanager
def _figure(plot_id: str, height_in: float) -> Iterator[tuple[Figure, Axes]]:
    import matplotlib

    matplotlib.use("svg", force=True)
    import matplotlib.pyplot as plt

    rc: Any = {
        "svg.fonttype": "none",  # text stays text: searchable, small, printed by the browser
        "svg.hashsalt": plot_id,  # ids deterministic and distinct between inlined plots
        "svg.id": plot_id,
        "text.parse_math": False,
        "text.usetex": False,
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with matplotlib.rc_context(rc):
        fig, ax = plt.subplots(figsize=(WIDTH_IN, max(1.6, min(height_in, 9.0))),
                               layout="constrained")  # fmt: skip
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with warnings.catch_warnings():
        # A span of a few minutes has no tick interval in matplotlib's table; its
        # fallback (ticks every 30 s) is right, its warning is noise on the console.
        warnings.filterwarnings("ignore", message="AutoDateLocator was unable")
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    # An inline <svg> in HTML needs no XML prolog or DOCTYPE.
    return text[text.index("<svg") :]


def _legend_above(ax: Axes, ncols: int) -> None:
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, ncols=ncols, frameon=False)


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _mark(container: Any, gid: str) -> None:
    for i, artist in enumerate(container):
        artist.set_gid(f"{gid}-{i}")


def _width(bucket: str) -> float:
    return 0.9 * {"day": 1.0, "hour": _HOUR, "minute": _MINUTE}[bucket]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _num(moment: datetime) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(moment))  # type: ignore[no-untyped-call]


def _from_ns(ns: int) -> float:
    return _num(datetime.fromtimestamp(ns / 1e9, tz=UTC))


def _time_axis(ax: Axes, xs: Sequence[float], width: float = 0.0) -> None:
    import matplotlib.dates as mdates

    # The data's own extent (matplotlib pads a lone point with years of axis), plus a
    # margin of at least half a minute.
    low, high = min(xs), max(xs) + width
    margin = max((high - low) * 0.03, _MINUTE / 2)
    ax.set_xlim(low - margin, high + margin)
    locator = mdates.AutoDateLocator(tz=UTC, maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel("UTC")
