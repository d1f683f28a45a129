"""The embedded default, as users run it: ``locust -f locustfiles/handshake.py`` with no --host."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from chaos.report.events import read_events
from chaos.results import RunFinished, RunStarted, SignalSent
from tests.helpers import LOCUST, LOCUSTFILE, assert_gone, page_template_args, port_is_free, read_summary, wait_until

FAST_CHAOS = ["--metrics-port", "0", "--hold-seconds", "1", "--keep-open-seconds", "0.5"]
FAST_CHAOS += ["--term-interval", "1", "--term-jitter", "0.5"]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def test_headless_run_lands_terms_on_pending_handshakes_and_leaves_nothing(tmp_path):
    report = tmp_path / "report.json"
    command = [*LOCUST, "-u", "60", "-r", "60", "-t", "12s", "--csv", str(tmp_path / "run")]
    command += [*FAST_CHAOS, "--chaos-report-json", str(report), "--chaos-events", str(tmp_path / "events.jsonl")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: Locust's own "some requests failed"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]

    rows = _rows(tmp_path / "run_stats.csv")
    assert int(rows["accepted"]["Request Count"]) > 0
    summary = read_summary(report)
    assert summary["target"]["embedded"] is True
    assert summary["signals"]["sent"] >= 2
    assert summary["signals"]["landed_with_pending"] >= 1
    assert max(summary["signals"]["pending_at_term"]) >= 1
    # Every attempt Locust counted is in the summary under the same outcome name.
    for name, count in summary["outcomes"].items():
        assert int(rows[name]["Request Count"]) == count
    assert "handshake-chaos summary" in done.stdout
    # --chaos-events beside it: the run as it went, its summary last and the same as the file's.
    events = read_events(tmp_path / "events.jsonl")
    assert isinstance(events[0], RunStarted) and events[0].target_url == summary["target"]["url"]
    assert isinstance(events[-1], RunFinished) and events[-1].summary.to_json() == summary
    sent = [event for event in events if isinstance(event, SignalSent)]
    assert [event.id for event in sent] == [record["id"] for record in summary["signals"]["records"]]

    assert_gone(summary["target"]["pids"])
    assert port_is_free(summary["target"]["port"])


def test_ctrl_c_stops_everything_and_keeps_the_report(tmp_path):
    report = tmp_path / "report.json"
    command = [*LOCUST, "-u", "30", "-r", "30", "-t", "120s", "--csv", str(tmp_path / "run")]
    command += [*FAST_CHAOS, "--chaos-report-json", str(report)]
    locust = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stats = tmp_path / "run_stats.csv"
        wait_until(
            lambda: stats.exists() and int(_rows(stats).get("Aggregated", {}).get("Request Count", 0) or 0) > 0,
            60,
            "the first handshakes in Locust's CSV",
        )
        started = [p.pid for p in psutil.Process(locust.pid).children(recursive=True)]
        assert started, "the embedded deployment is a child of locust"
        locust.send_signal(signal.SIGINT)
        _, stderr = locust.communicate(timeout=90)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.communicate()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert_gone(started)
    summary = read_summary(report)
    assert sum(summary["outcomes"].values()) > 0
    assert port_is_free(summary["target"]["port"])


def test_bad_option_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [*LOCUST, "-u", "1", "-t", "2s", "--workers", "2", "--min-alive", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "handshake-chaos:" in line]
    assert len(errors) == 1 and "min-alive" in errors[0]


def test_unknown_ws_implementation_exits_2_without_starting_anything(tmp_path):
    before = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    done = subprocess.run(
        [*LOCUST, "-u", "1", "-t", "2s", "--ws", "tornado"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "ws implementation" in done.stderr
    assert {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)} == before


def test_options_show_in_the_web_ui_and_quitting_stops_everything(tmp_path):
    from tests.helpers import free_port, scrape

    web_port = free_port()
    command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE]
    command += ["--web-host", "127.0.0.1", "--web-port", str(web_port), "--metrics-port", "0"]
    locust = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pages: list[str] = []

    def page_served() -> bool:
        try:
            pages.append(scrape(f"http://127.0.0.1:{web_port}/"))
        except OSError:
            return False
        return True

    try:
        wait_until(page_served, 60, "the web UI")
        started = [p.pid for p in psutil.Process(locust.pid).children(recursive=True)]
        assert started, "the embedded deployment runs while the web UI waits"
    finally:
        locust.send_signal(signal.SIGINT)
        _, stderr = locust.communicate(timeout=90)
    for option in ("hold_seconds", "term_interval", "min_alive", "max_signals"):
        assert option in pages[-1], option
    # Options that shape the deployment only take effect at process start: not offered in the form
    # (tests/locust_plugin/test_web_ui.py checks the form field by field).
    form = page_template_args(pages[-1])["extra_options"]
    for option in ("target_pidfile", "metrics_port"):
        assert option not in form, option
    assert "Traceback" not in stderr
    assert_gone(started)


def test_the_embedded_default_over_tls(tmp_path):
    report = tmp_path / "report.json"
    command = [*LOCUST, "-u", "30", "-r", "30", "-t", "10s", *FAST_CHAOS, "--tls", "--chaos-report-json", str(report)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    summary = read_summary(report)
    assert summary["target"]["url"].startswith("wss://127.0.0.1:")
    assert summary["outcomes"].get("accepted", 0) > 0, summary["outcomes"]
    assert not {"tls_untrusted", "tls_failed", "bad_response"} & set(summary["outcomes"])
    assert summary["signals"]["landed_with_pending"] >= 1
    assert_gone(summary["target"]["pids"])
