"""The report as one self-contained HTML file: no script, no external resource, prints to
PDF (docs/review.md, "The report").

Safety: every string from the trail goes through `_text` (ledger.escape for controls and
bidi marks, then HTML escaping), plots are matplotlib's SVG with its XML escaping, and the
page's Content-Security-Policy forbids scripts, remote loads, forms and frames, so even a
mistake in escaping could not run code or call out.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from auditlock.ledger.escape import escape
from auditlock.report import plots
from auditlock.report.model import Change, Problem, ReportData, StreamRow
from auditlock.report.soc2 import CONTROLS

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "base-uri 'none'; form-action 'none'"
)

STYLE = """
:root { --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --bad: #b42318; --good: #116329; }
* { box-sizing: border-box; }
body { font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1040px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.meta, .note { color: var(--muted); }
.result { display: inline-block; padding: 2px 10px; border-radius: 4px; font-weight: bold;
          color: #fff; background: var(--good); }
.result.FAIL { background: var(--bad); }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 12px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
figure { margin: 8px 0 16px; }
figure svg { width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; }
.empty { color: var(--muted); font-style: italic; border: 1px dashed var(--line); padding: 10px; }
.kpis { display: flex; flex-wrap: wrap; gap: 8px 24px; margin: 8px 0; }
.kpis div b { display: block; font-size: 18px; }
nav ol { columns: 2; font-size: 13px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav { display: none; }
  h2 { break-after: avoid; }
  figure, tr, .kpis { break-inside: avoid; }
  thead { display: table-header-group; }
  a { color: inherit; text-decoration: none; }
  .result { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
}
"""

MAX_ROWS = 500  # per table; the rest are counted and left to `auditlock query`


def render(data: ReportData) -> str:
    """The whole report as HTML text."""
    v = data.verification
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(data.title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header>",
        f"<h1>{_text(data.title)}</h1>",
        f'<p class="meta">Period: {_text(data.since or "the beginning")} to '
        f"{_text(data.until or 'the end')} (UTC). Generated {_text(data.generated_at)}. "
        f"Sources: {', '.join(f'<code>{_text(u)}</code>' for u in v.urls)}.</p>",
        f'<p>Verification: <span class="result {_attr(v.result)}">{_text(v.result)}</span> '
        f"{_text(v.trust)}</p>",
        "</header>",
        _contents(),
        _verification(data),
        _activity(data),
        _privileged(data),
        _soc2(data),
        '<footer class="note"><p>Every figure and table counts only events that '
        "verification accepted. Strings from the trail are shown escaped: control and "
        "bidirectional characters appear as <code>\\xNN</code>/<code>\\uNNNN</code>.</p>"
        "</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


SECTIONS = (
    ("verification", "Verification summary"),
    ("plot-events-per-hour", "Events per hour by category"),
    ("plot-failures", "Failures and denials over time"),
    ("plot-top-actors", "Top actors"),
    ("plot-secret-reads", "Secret reads by actor"),
    ("plot-config-timeline", "Configuration changes"),
    ("plot-checkpoint-cadence", "Checkpoint cadence per stream"),
    ("table-rbac", "RBAC grants and changes"),
    ("table-policy", "AuditPolicy changes"),
    ("table-exec", "Exec sessions"),
    ("soc2", "SOC 2 control map"),
)


def _contents() -> str:
    items = "".join(f'<li><a href="#{i}">{_text(t)}</a></li>' for i, t in SECTIONS)
    return f"<nav><h2>Contents</h2><ol>{items}</ol></nav>"


# -- 1. verification ---------------------------------------------------------------------


def _verification(data: ReportData) -> str:
    v = data.verification
    kpis = [
        ("streams", f"{len(v.streams):,}"),
        ("events verified", f"{v.events_verified:,}"),
        ("events in period", f"{data.events:,}"),
        ("checkpoints verified", f"{v.checkpoints_verified:,}"),
        ("signing keys", f"{len(v.key_ids):,}"),
        ("gaps", f"{len(v.gaps):,}"),
        ("findings", f"{len(v.findings):,}"),
    ]
    out = [
        '<section id="verification"><h2>1. Verification summary</h2>',
        '<div class="kpis">'
        + "".join(f"<div><b>{val}</b>{_text(name)}</div>" for name, val in kpis)
        + "</div>",
        f'<p class="note">Events in the period: {_text(data.first_event or "none")} to '
        f"{_text(data.last_event or 'none')}.</p>",
        "<h3>Streams</h3>",
        _table(
            [
                "stream",
                "state",
                "epochs",
                "events",
                "checkpoints",
                "first checkpoint",
                "last checkpoint",
                "key ids",
            ],
            [_stream_cells(s) for s in v.streams],
            numeric={2, 3, 4},
        ),
        "<h3>Signing keys</h3>",
        "<p>"
        + (", ".join(f"<code>{_text(k)}</code>" for k in v.key_ids) or "none recorded")
        + "</p>",
        _retention(data),
        '<h3 id="gaps">Gaps</h3>',
        _problems(v.gaps, "No gaps: every stream checkpointed within its heartbeat."),
        "<h3>Findings</h3>",
        _problems(v.findings, "None: verification passed."),
        "<h3>Warnings</h3>",
        _problems(v.warnings, "None."),
        "<h3>Left out of this report</h3>",
        _problems(v.excluded, "Nothing: every stored event in the period verified."),
        "</section>",
    ]
    return "\n".join(out)


def _stream_cells(s: StreamRow) -> list[str]:
    return [
        f"<code>{_text(s.stream)}</code>",
        _text(s.state),
        f"{s.epochs:,}",
        f"{s.events:,}",
        f"{s.checkpoints:,}",
        _text(s.first_checkpoint or ""),
        _text(s.last_checkpoint or ""),
        " ".join(f"<code>{_text(k[:16])}…</code>" for k in s.key_ids),
    ]


def _retention(data: ReportData) -> str:
    r = data.verification.retention
    if r is None:
        return "<h3>Retention and legal hold</h3><p>Not read for this report.</p>"
    modes = ", ".join(f"{n:,} {_text(m)}" for m, n in sorted(r.modes.items())) or "none"
    return (
        "<h3>Retention and legal hold</h3>"
        f"<p>{r.objects:,} objects: lock modes {modes}; earliest retain-until "
        f"{_text(r.earliest_retain_until or 'none')}; legal hold on {r.legal_holds:,} of "
        f"{r.objects:,} objects.</p>"
    )


def _problems(rows: Sequence[Problem], none: str) -> str:
    if not rows:
        return f"<p>{_text(none)}</p>"
    return _table(
        ["code", "where", "what"],
        [[f"<code>{_text(p.code)}</code>", _text(p.place), _text(p.message)] for p in rows],
    )


# -- 2. activity (plots) -----------------------------------------------------------------


def _activity(data: ReportData) -> str:
    figures = [
        ("plot-events-per-hour", f"Events per {data.bucket} by category",
         plots.events_per_hour(data.per_hour, data.bucket), f"Each bar is one UTC {data.bucket}."),
        ("plot-failures", "Failures and denials over time",
         plots.failures_over_time(data.failures, data.bucket),
         "Denials: requests refused (HTTP 401/403, authorization decision forbid). "
         "Failures: every other event with outcome failure."),
        ("plot-top-actors", "Top actors",
         plots.ranked_bars("top-actors", data.top_actors, "events"),
         f"The {len(data.top_actors)} actors with the most events (kind:name)."),
        ("plot-secret-reads", "Secret reads by actor",
         plots.ranked_bars("secret-reads", data.secret_reads, "Secret reads"),
         "get, list and watch of Secrets, by who made them."),
        ("plot-config-timeline", "Configuration changes",
         plots.change_timeline(data.config_timeline),
         "Changes of category configuration, one row per kind of target; a dot's size grows "
         "with the changes in its time bucket."),
        ("plot-checkpoint-cadence", "Checkpoint cadence per stream",
         plots.checkpoint_cadence(data.checkpoints, data.slack_seconds),
         "A tick per signed checkpoint; red: longer than the stream's heartbeat plus "
         f"{data.slack_seconds:g} s without one."),
    ]  # fmt: skip
    out = ['<section id="activity"><h2>2. Activity</h2>']
    for fid, title, svg, caption in figures:
        body = (
            svg if svg is not None else '<p class="empty">No events of this kind in the period.</p>'
        )
        out.append(
            f'<figure id="{fid}" class="plot" data-empty="{"yes" if svg is None else "no"}">'
            f"<h3>{_text(title)}</h3>{body}<figcaption>{_text(caption)}</figcaption></figure>"
        )
    out.append("</section>")
    return "\n".join(out)


# -- 3. privileged changes ---------------------------------------------------------------


def _privileged(data: ReportData) -> str:
    tables = [
        ("table-rbac", "RBAC grants and changes", data.rbac_changes, "subjects → role"),
        ("table-policy", "AuditPolicy changes", data.policy_changes, "detail"),
        ("table-exec", "Exec sessions", data.exec_sessions, "command"),
    ]
    out = ['<section id="privileged"><h2>3. Privileged changes</h2>']
    for tid, title, rows, detail in tables:
        out.append(f'<div id="{tid}"><h3>{_text(title)}</h3>')
        if rows:
            out.append(_change_table(rows, detail, data.truncated.get(tid, 0)))
        else:
            out.append('<p class="empty">None in the period.</p>')
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def _change_table(rows: Sequence[Change], detail: str, more: int) -> str:
    shown = list(rows[:MAX_ROWS])
    more += len(rows) - len(shown)
    table = _table(
        ["time (UTC)", "actor", "action", "outcome", "target", detail, "stream / seq"],
        [
            [_text(c.time), _text(c.actor), _text(c.action), _text(c.outcome),
             _text(c.target), _text(c.detail), f"<code>{_text(c.stream)}</code> / {c.seq}"]
            for c in shown
        ],
    )  # fmt: skip
    if more:
        table += f'<p class="note">{more:,} more not shown (use <code>auditlock query</code>).</p>'
    return table


# -- 4. SOC 2 ----------------------------------------------------------------------------


def _soc2(data: ReportData) -> str:
    rows = []
    for control in CONTROLS:
        links = "<br>".join(
            f'<a href="#{anchor}">{_text(title_of(anchor))}</a>: {_text(what)}'
            for anchor, what in control.evidence
        )
        rows.append(
            [f"<b>{_text(control.id)}</b>", _text(control.asks), links,
             _text(control.count(data))]
        )  # fmt: skip
    return (
        '<section id="soc2"><h2>4. SOC 2 control map</h2>'
        '<p class="note">Trust Services Criteria (2017, revised 2022). The map points to '
        "evidence; whether it satisfies a control is the auditor's judgement.</p>"
        + _table(["control", "what it asks", "evidence in this report", "in this period"], rows)
        + "</section>"
    )


def title_of(anchor: str) -> str:
    return dict(SECTIONS)[anchor]


# -- helpers -----------------------------------------------------------------------------


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int] | None = None
) -> str:
    numeric = numeric or set()
    head = "".join(
        f"<th{' class=num' if i in numeric else ''}>{_text(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: object) -> str:
    """A string from anywhere (the trail included) as HTML text."""
    return html.escape(escape(str(value)), quote=True)


def _attr(value: str) -> str:
    return "".join(ch for ch in value if ch.isalnum())
