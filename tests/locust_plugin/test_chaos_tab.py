"""The Chaos tabs in Locust's web UI, in a real headless browser against a live run."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.parse
import urllib.request

from tests.browser import Browser, Page
from tests.helpers import (
    LOCUSTFILE,
    assert_gone,
    free_port,
    metric_sum,
    page_template_args,
    read_summary,
    scrape,
    wait_until,
)


def _rows(page: Page, tab: str) -> list[str]:
    return page.evaluate("Array.from(document.querySelectorAll('tbody tr')).map(row => row.innerText)") or []


def test_the_chaos_tabs_show_signals_errors_and_the_gate_live(tmp_path):
    web_port, metrics_port = free_port(), free_port()
    report = tmp_path / "summary.json"
    command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--web-host", "127.0.0.1", "--web-port", str(web_port)]
    command += ["--metrics-port", str(metrics_port), "--hold-seconds", "1", "--term-interval", "1", "--ws", "wsproto"]
    # uvicorn answers a handshake its shutdown catches with HTTP 500: counted as a client error here.
    command += ["--http-rejection-is-error", "--chaos-report-json", str(report)]
    locust = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{web_port}"
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_until(
            lambda: metric_sum(metrics, "handshake_chaos_handshakes_total") >= 0, 60, "the deployment and /metrics"
        )
        host = page_template_args(scrape(f"{base}/"))["host"]  # the embedded deployment, as the form shows it
        form = urllib.parse.urlencode({"user_count": "30", "spawn_rate": "30", "host": host}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{base}/swarm", data=form), timeout=10):
            pass
        wait_until(lambda: metric_sum(metrics, "handshake_chaos_shutdown_errors_total") >= 1, 60, "a first error")
        with Browser(tmp_path / "profile") as browser:
            page = browser.open(f"{base}/?tab=chaos-signals")
            page.wait_until("document.querySelectorAll('tbody tr').length > 0", 30, "a signal row")
            signal_row = _rows(page, "signals")[0]
            assert "TERM to worker" in signal_row and "worker-term" in signal_row, signal_row
            page.navigate(f"{base}/?tab=chaos-errors")
            page.wait_until("document.body.innerText.includes('handshake_http_500')", 30, "an error row")
            error_rows = [row for row in _rows(page, "errors") if "handshake_http_500" in row]
            assert error_rows and "client" in error_rows[0] and "http_500" in error_rows[0], error_rows
            page.navigate(f"{base}/?tab=chaos-gate")
            page.wait_until("document.body.innerText.includes('handshake-time shutdown errors')", 30, "the gate")
            assert "fail" in page.evaluate("document.querySelector('tbody tr').innerText")
            page.screenshot(tmp_path / "chaos-gate.png")
            assert not page.errors, page.errors
            live = browser.open(f"{base}/chaos")
            assert live.evaluate("document.querySelectorAll('svg .signal-marker').length") >= 2
            assert not live.errors, live.errors
        assert "handshake-chaos: first client-side handshake_http_500" in scrape(f"{base}/logs")
    finally:
        # Ctrl-C while the UI polls: it must reach Locust's main greenlet, not end a web request.
        locust.send_signal(signal.SIGINT)
        _, stderr = locust.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert_gone(read_summary(report)["target"]["pids"])
