"""The report's HTML escapes every string from the trail, forbids scripts, and draws each
plot from its data or says it has none (report/html.py, report/plots.py). The browser's
view of the same: tests/integration/test_report_browser.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from auditlock.report.html import CSP, render
from auditlock.report.model import (
    Change,
    CheckpointTrack,
    Problem,
    ReportData,
    Retention,
    StreamRow,
    Verification,
)

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>\"' $\\frac{a}{b}$ \u202eevil\x1b[2J"
HOUR = "2026-01-01T00:00:00.000000000Z"


def _data(**overrides: object) -> ReportData:
    verification = Verification(
        urls=(f"file:///{EVIL}",), result="FAIL", trust=EVIL, events_verified=3,
        checkpoints_verified=2,
        streams=(StreamRow(EVIL, "open", 1, 3, 2, HOUR, HOUR, (EVIL,)),),
        findings=(Problem(EVIL, EVIL, EVIL),), warnings=(Problem("restart", EVIL, EVIL),),
        excluded=(Problem("excluded", EVIL, EVIL),),
        retention=Retention(2, {EVIL: 2}, EVIL, 1),
    )  # fmt: skip
    change = Change(HOUR, EVIL, 1, EVIL, EVIL, EVIL, EVIL, EVIL)
    data = ReportData(
        title=EVIL, since=None, until=None, generated_at=HOUR, verification=verification,
        events=3, first_event=HOUR, last_event=HOUR,
        per_hour=[(HOUR, EVIL, 2), (HOUR, "access", 1)], failures=[(HOUR, "denial", 1)],
        top_actors=[(EVIL, 3)], secret_reads=[(EVIL, 1)],
        config_timeline=[(HOUR, EVIL, "success", 1)],
        checkpoints=[CheckpointTrack(EVIL, (1_767_225_600 * 10**9, 1_767_229_200 * 10**9), 60_000)],
        rbac_changes=[change], policy_changes=[change], exec_sessions=[change],
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(data, key, value)
    return data


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


@pytest.fixture(scope="module")
def html() -> str:
    return render(_data())


def test_trail_strings_are_escaped_everywhere_and_scripts_are_forbidden(html: str) -> None:
    parser = _Tags()
    parser.feed(html)
    assert not [tag for tag, _ in parser.tags if tag in ("script", "iframe", "object", "embed")]
    assert not [a for _, attrs in parser.tags for a, _ in attrs if a.startswith("on")]
    assert "<script" not in html.lower()
    assert f'content="{CSP}"' in html and "default-src 'none'" in CSP
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\u202e" not in html and "\\u202e" in html  # bidi override shown, not obeyed
    assert "\x1b" not in html and "\\x1b" in html
    assert "$\\\\frac" in html  # math text off: a dollar sign is a dollar sign


def test_every_plot_is_drawn_with_marks_the_browser_test_can_find(html: str) -> None:
    figures = re.findall(r'<figure id="(plot-[a-z-]+)" class="plot" data-empty="(yes|no)">', html)
    assert len(figures) == 6 and all(empty == "no" for _, empty in figures)
    for plot, _ in figures:
        body = html.split(f'<figure id="{plot}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in body and 'id="data-' in body, plot
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', ""
    ).replace("http://www.w3.org/1999/02/22-rdf-syntax-ns#", "").replace(
        "http://purl.org/dc/", ""
    ).replace("http://creativecommons.org/ns#", "").replace("http://purl.org/dc/dcmitype/", "")


def test_a_period_with_nothing_of_a_kind_says_so_instead_of_an_empty_plot() -> None:
    html = render(_data(secret_reads=[], exec_sessions=[], checkpoints=[]))
    assert html.count('data-empty="yes"') == 2
    assert "None in the period." in html
