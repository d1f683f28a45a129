"""Every way a run is stopped: SIGINT and SIGTERM at random moments leave nothing behind, keep the summary."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import LOCUST, free_port, locust_requests, metric_sum, read_summary, wait_until

CLI = [sys.executable, "-m", "chaos"]
# One scenario: these tests are about stopping a run, and the locked release passes hold-accept.
FAST = ["--hold-seconds", "1", "--term-interval", "1", "--term-jitter", "0.5", "--metrics-port", "0"]
FAST += ["--scenario", "hold-accept"]


class _Descendants:
    """Every process the command started, as (pid, create time): seen while it runs, checked after."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, float] = {}

    def look(self) -> None:
        try:
            for child in psutil.Process(self.root).children(recursive=True):
                try:
                    self.seen.setdefault(child.pid, child.create_time())
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            return

    def alive(self) -> list[int]:
        alive = []
        for pid, created in self.seen.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        return alive


def _log_says(report: Path, text: str) -> bool:
    log = report / "locust.log"
    return log.is_file() and text in log.read_text(errors="replace")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["start-up", "load", "report"])
def test_a_signal_at_any_moment_stops_everything_and_keeps_the_summary(tmp_path, signum, moment):
    rng = random.Random()
    report = tmp_path / "report"
    soak = subprocess.Popen(
        [*CLI, "soak", "--target-python", sys.executable, "--ws", "auto", "--duration", "8s", "--users", "20"]
        + [*FAST, "--report-dir", str(report)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started = _Descendants(soak.pid)
    load_started = moment != "start-up"
    try:
        if moment == "start-up":

            def started_locust() -> bool:
                started.look()
                return bool(started.seen)

            wait_until(started_locust, 30, "the soak to start Locust")
            deadline = time.monotonic() + rng.uniform(0.0, 0.8)
            while time.monotonic() < deadline:
                started.look()
        elif moment == "load":

            def signalled() -> bool:
                started.look()
                return _log_says(report, "sent TERM to worker") and locust_requests(report / "locust_stats.csv") > 0

            wait_until(signalled, 60, "a TERM under load")
            time.sleep(rng.uniform(0.0, 1.0))  # a random moment within the load, not a readiness wait
            started.look()
        else:

            def reporting() -> bool:
                started.look()
                return _log_says(report, "handshake-chaos summary")

            wait_until(reporting, 60, "Locust writing its summary")
        os.killpg(soak.pid, signum) if signum == signal.SIGINT else soak.send_signal(signum)
        _, stderr = soak.communicate(timeout=150)
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.communicate()
    assert "Traceback" not in stderr, stderr[-3000:]
    wait_until(lambda: not started.alive(), 30, f"everything the soak started to stop: {started.alive()}")
    if not load_started:
        assert soak.returncode in (128 + signum, 0, 3), stderr  # stopped, or the run was already over
        return
    summary = read_summary(report / "summary.json")
    assert soak.returncode == summary["gate"]["exit_code"], summary["gate"]
    if moment == "load":
        assert summary["gate"]["verdict"] == "interrupted" and soak.returncode == 128 + signum
        assert summary["signals"]["sent"] >= 1 and sum(summary["outcomes"].values()) > 0
        # The stop made no outcomes of its own: nothing was refused by a deployment being taken down.
        assert summary["outcomes"].get("refused", 0) == 0, summary["outcomes"]
    assert (report / "report.md").is_file()


def test_the_locustfile_stopped_by_sigterm_is_interrupted_with_143(tmp_path):
    report = tmp_path / "summary.json"
    port = free_port()
    command = [*LOCUST, "-u", "20", "-r", "20", "-t", "120s", "--hold-seconds", "1", "--term-interval", "1"]
    command += ["--metrics-port", str(port), "--gate", "--chaos-report-json", str(report), "--scenario", "hold-accept"]
    locust = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = _Descendants(locust.pid)

    def signalled() -> bool:
        started.look()
        metrics = f"http://127.0.0.1:{port}/metrics"
        return (
            metric_sum(metrics, "handshake_chaos_signals_total") >= 1
            and metric_sum(metrics, "handshake_chaos_handshakes_total") >= 1
        )

    try:
        wait_until(signalled, 60, "a TERM under load")
        locust.send_signal(signal.SIGTERM)
        _, stderr = locust.communicate(timeout=120)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.communicate()
    assert "Traceback" not in stderr, stderr[-3000:]
    summary = read_summary(report)
    assert locust.returncode == 143 and summary["gate"]["verdict"] == "interrupted", summary["gate"]
    assert summary["signals"]["sent"] >= 1 and summary["outcomes"].get("refused", 0) == 0
    wait_until(lambda: not started.alive(), 30, "everything Locust started to stop")
