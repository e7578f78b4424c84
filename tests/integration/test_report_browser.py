"""`auditlock report` opened in a real headless Chromium (tests/servers/chromium.py): the
page renders, asks for nothing over the network, logs no error, runs no script even with
`<script>` in actor names, draws data in every plot, links every SOC 2 control to a
section that exists, and prints to PDF."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import cli
from tests.helpers.report_trail import HOSTILE, public_key_file, write_trail
from tests.servers.chromium import Chromium, PageVisit
from tests.unit.ledger_helpers import make_signer

PLOTS = [
    "plot-events-per-hour",
    "plot-failures",
    "plot-top-actors",
    "plot-secret-reads",
    "plot-config-timeline",
    "plot-checkpoint-cadence",
]
CHECKS = {
    "title": "document.querySelector('h1').textContent",
    "scripts": "document.querySelectorAll('script').length",
    "handlers": "[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
    ".some(a => a.name.toLowerCase().startsWith('on'))).length",
    "pwned": "typeof window.__pwned",
    "text": "document.body.innerText",
    # per plot: its data marks (ids data-*) that the browser laid out with a size
    "plots": "Object.fromEntries([...document.querySelectorAll('figure.plot')].map(f => [f.id, "
    "[...f.querySelectorAll('svg [id^=\"data-\"]')].filter(e => { const b = e.getBBox(); "
    "return b.width > 0 || b.height > 0; }).length]))",
    "soc2": "[...document.querySelectorAll('#soc2 tbody tr')].map(r => [r.cells[0].innerText, "
    "[...r.querySelectorAll('a')].map(a => a.getAttribute('href'))])",
    "anchors": "[...document.querySelectorAll('a[href^=\"#\"]')]"
    ".filter(a => !document.getElementById(a.getAttribute('href').slice(1))).length",
    "nav": "getComputedStyle(document.querySelector('nav')).display",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("report")
    signer = make_signer(21)
    url = write_trail(root / "store", signer)
    key = public_key_file(root / "key.pub", signer)
    cache = root / "cache"
    cache.mkdir(mode=0o700)
    out = root / "report.html"
    code, text, _ = cli("report", url, "--public-key", str(key), "--cache-dir", str(cache),
                      "--out", str(out), "--json")  # fmt: skip
    assert code == 0, text
    return out, json.loads(text)


@pytest.fixture(scope="module")
def visit(chromium: Chromium, report: tuple[Path, dict[str, Any]]) -> PageVisit:
    return chromium.open(report[0], checks=CHECKS)


def test_the_report_renders_with_no_console_error_and_no_request(visit: PageVisit) -> None:
    assert visit.errors == []
    assert visit.requests == []  # nothing fetched: self-contained
    assert visit.checks["title"] == "Audit trail review"
    from PIL import Image

    shot = Image.open(io.BytesIO(visit.screenshot))
    assert shot.width == 1280 and shot.height > 3000  # the whole page, not a blank viewport
    colours = shot.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, plots, tables: not an empty page


def test_every_plot_has_data(visit: PageVisit) -> None:
    marks = visit.checks["plots"]
    assert sorted(marks) == sorted(PLOTS)
    assert all(marks[plot] > 0 for plot in PLOTS), marks


def test_hostile_actor_names_are_shown_as_text_and_never_run(
    visit: PageVisit, report: tuple[Path, dict[str, Any]]
) -> None:
    assert visit.checks["scripts"] == 0
    assert visit.checks["handlers"] == 0
    assert visit.checks["pwned"] == "undefined"
    assert f"user:{HOSTILE}" in visit.checks["text"]  # the exec table shows it in full
    assert "<script" not in report[0].read_text().lower()


def test_the_soc2_map_links_each_control_to_sections_that_exist(visit: PageVisit) -> None:
    rows = dict(visit.checks["soc2"])
    assert sorted(rows) == ["CC6.1", "CC6.2", "CC6.3", "CC7.2", "CC7.3", "CC8.1"]
    assert all(links for links in rows.values())
    assert visit.checks["anchors"] == 0  # every in-page link has its target


def test_the_report_prints_to_pdf(chromium: Chromium, report: tuple[Path, dict[str, Any]]) -> None:
    printed = chromium.open(report[0], checks={"nav": CHECKS["nav"]}, print_media=True, pdf=True)
    assert printed.errors == []
    assert printed.checks["nav"] == "none"  # the contents list is for the screen only
    assert printed.pdf.startswith(b"%PDF-")
    pages = printed.pdf.count(b"/Type /Page") - printed.pdf.count(b"/Type /Pages")
    assert 3 <= pages <= 30
