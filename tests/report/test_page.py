"""The soak's report.html: self-contained, rendered in a real headless browser with no console errors."""

from __future__ import annotations

import dataclasses

from chaos.report.page import soak_page
from chaos.results import TimelinePoint
from tests.browser import Browser
from tests.helpers import run_summary

_596 = "server:uvicorn_596_wsproto_close_during_handshake"


def _timed_summary():
    summary = run_summary()
    started = 1_800_000_000.0
    # The summary's two signals, 3 s and 7.5 s into the run; the second caught five handshakes.
    first, second = (dataclasses.replace(record) for record in summary.signals.records)
    records = [
        dataclasses.replace(first, time=started + 3.0),
        dataclasses.replace(second, time=started + 7.5, pending=5),
    ]
    timeline = [
        TimelinePoint(t, pending, handshakes=int(t * 10), errors={_596: 0 if t < 3 else 9})
        for t, pending in [(0.0, 0), (1.0, 14), (2.0, 20), (3.0, 12), (4.0, 18), (6.0, 16), (8.0, 9), (10.0, 0)]
    ]
    signals = dataclasses.replace(summary.signals, records=records)
    return dataclasses.replace(summary, started=started, timeline=timeline, signals=signals, duration_seconds=10.0)


def test_the_page_is_self_contained():
    page = soak_page(_timed_summary())
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert page.count('class="signal-marker"') == 4  # each signal on both charts
    assert "uvicorn_596_wsproto_close_during_handshake" in page and "fail (exit 1)" in page
    assert len(page) < 200_000


def test_the_page_renders_in_a_real_browser_with_markers_and_no_console_errors(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(soak_page(_timed_summary()))
    with Browser(tmp_path / "profile") as browser:
        page = browser.open(path.as_uri())
        assert page.evaluate("document.querySelectorAll('svg .signal-marker').length") == 4
        assert page.evaluate("document.querySelectorAll('svg polyline').length") == 2  # pending, one signature
        title = page.evaluate("document.querySelector('.signal-marker title').textContent")
        assert "TERM to worker 4599" in title and "12 pending" in title and "crash" in title
        width = page.evaluate("document.querySelector('svg.chart').getBoundingClientRect().width")
        assert width > 500  # drawn, not collapsed
        page.screenshot(tmp_path / "report.png")
        assert not page.errors, page.errors
