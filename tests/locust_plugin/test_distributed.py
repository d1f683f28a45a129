"""Locust's distributed mode: counts aggregated once, on the master."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import LOCUSTFILE, assert_gone, free_port, read_summary

CHAOS = ["--hold-seconds", "1", "--keep-open-seconds", "0.5", "--term-interval", "1", "--term-jitter", "0.5"]


def _aggregated_requests(stats_csv: Path) -> int:
    with open(stats_csv) as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    return int(rows["Aggregated"]["Request Count"])


@pytest.mark.parametrize("mode", ["master-and-two-workers", "processes-2"])
def test_counts_are_aggregated_once_on_the_master(tmp_path, mode):
    report = tmp_path / "report.json"
    common = ["-f", LOCUSTFILE, *CHAOS]
    run = ["--headless", "-u", "40", "-r", "40", "-t", "14s", "--csv", str(tmp_path / "run")]
    run += ["--metrics-port", str(free_port()), "--chaos-report-json", str(report)]
    workers: list[subprocess.Popen[str]] = []
    if mode == "processes-2":
        master_command = [sys.executable, "-m", "locust", *common, *run, "--processes", "2"]
    else:
        port = free_port()
        master_command = [sys.executable, "-m", "locust", *common, *run, "--master", "--expect-workers", "2"]
        master_command += ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
        worker_command = [sys.executable, "-m", "locust", *common, "--worker", "--master-host", "127.0.0.1"]
        worker_command += ["--master-port", str(port)]
        workers = [
            subprocess.Popen(worker_command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
    try:
        master = subprocess.run(master_command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        worker_output = [w.communicate(timeout=60) for w in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert master.returncode in (0, 1), master.stderr[-3000:]
    everything = master.stderr + "".join(out + err for out, err in worker_output)
    assert "Traceback" not in everything, everything[-3000:]
    assert everything.count("starting gunicorn") == 1  # only the master deploys

    summary = read_summary(report)
    locust_total = _aggregated_requests(tmp_path / "run_stats.csv")
    assert locust_total > 0
    assert sum(summary["outcomes"].values()) == locust_total
    assert summary["metrics_totals"]["handshake_chaos_handshakes"] == locust_total
    assert summary["signals"]["sent"] >= 2
    # Exposure answered by the workers: pending handshakes were seen at the TERMs.
    assert summary["signals"]["landed_with_pending"] >= 1
    # The master planned the scenarios; its workers played them (each handshake in one), and answered
    # each signal's exposure per scenario, the states they held themselves included.
    played = set(summary["outcomes_by_scenario"])
    assert len(played) >= 3 and played <= set(summary["scenarios"]), (played, summary["scenarios"])
    by_scenario = [r["pending_by_scenario"] for r in summary["signals"]["records"]]
    assert any(by_scenario) and all(
        sum(p.values()) == r["pending"] for p, r in zip(by_scenario, summary["signals"]["records"], strict=True)
    )
    assert_gone(summary["target"]["pids"])
