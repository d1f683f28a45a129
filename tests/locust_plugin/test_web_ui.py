"""Locust's web UI as a new user meets it: the start form posts every option, edits take effect at Start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from typing import Any

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


def _form_fields(template_args: dict[str, Any]) -> dict[str, str]:
    """Every option field as the form posts it: text as typed, checkboxes as true/false, blanks as ""."""
    fields = {}
    for name, field in template_args["extra_options"].items():
        default = field["default_value"]
        fields[name] = (
            ("true" if default else "false") if isinstance(default, bool) else ("" if default is None else str(default))
        )
    return fields


def _post(url: str, fields: dict[str, str]) -> dict[str, Any]:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read().decode())
    return answer


def test_start_form_edits_take_effect_and_bad_values_are_one_clear_line(tmp_path):
    web_port, metrics_port = free_port(), free_port()
    report = tmp_path / "summary.json"
    command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--web-host", "127.0.0.1"]
    command += ["--web-port", str(web_port), "--metrics-port", str(metrics_port), "--chaos-report-json", str(report)]
    # Started slow and unbounded; the form makes it fast and bounded.
    command += ["--term-interval", "60", "--hold-seconds", "1", "--keep-open-seconds", "0.5"]
    locust = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{web_port}"
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    pages: list[str] = []

    def page_served() -> bool:
        try:
            pages.append(scrape(f"{base}/"))
        except OSError:
            return False
        return True

    try:
        wait_until(page_served, 60, "the web UI")
        template_args = page_template_args(pages[-1])
        fields = _form_fields(template_args)
        # Process-start options are not offered: editing them could not take effect.
        assert {"term_interval", "max_signals", "hold_seconds", "hold_jitter", "dry_run"} <= set(fields)
        assert not {"ws", "workers", "target_python", "app", "metrics_port", "target_pidfile"} & set(fields)
        assert fields["term_interval"] == "60" and fields["max_signals"] == ""
        assert fields["scenarios"] == ""  # blank: every scenario that applies

        form = {"user_count": "20", "spawn_rate": "20", "host": template_args["host"], "run_time": ""}
        form |= fields | {"term_interval": "0.5", "term_jitter": "0", "max_signals": "2", "hold_jitter": ""}
        form |= {"scenarios": "hold-accept,deny-close"}  # a Start plays what the form names
        answer = _post(f"{base}/swarm", form)
        assert answer["success"], answer
        wait_until(lambda: metric_sum(metrics, "handshake_chaos_signals_total") >= 2, 45, "two signals after Start")
        # max-signals 2 took effect: the controller stopped by itself while the users still run.
        wait_until(
            lambda: metric_sum(metrics, "handshake_chaos_controller_running") == 0, 30, "the controller to stop at 2"
        )
        assert metric_sum(metrics, "handshake_chaos_signals_total") == 2
        assert metric_sum(metrics, "handshake_chaos_handshakes_total") > 0
        assert _post(f"{base}/stop", {})["success"]

        # Reset Stats starts the chaos counts over too: they keep matching Locust's request count.
        with urllib.request.urlopen(urllib.request.Request(f"{base}/stats/reset", method="POST"), timeout=10):
            pass
        wait_until(lambda: metric_sum(metrics, "handshake_chaos_handshakes_total") == 0, 10, "the counts reset")

        # A bad value: the run starts with the previous options and the UI's log says why, once.
        bad = form | {"term_interval": "fast", "max_signals": "1"}
        assert _post(f"{base}/swarm", bad)["success"]
        wait_until(
            lambda: "--term-interval: expected a number" in scrape(f"{base}/logs"), 30, "the bad value in the log"
        )
        logs = json.loads(scrape(f"{base}/logs"))["master"]
        lines = [line for line in logs if "--term-interval: expected a number, got 'fast'" in line]
        assert len(lines) == 1 and "keeping the previous options" in lines[0]
        wait_until(
            lambda: metric_sum(metrics, "handshake_chaos_signals_total") >= 4, 45, "two more signals (max 2 kept)"
        )
        wait_until(lambda: metric_sum(metrics, "handshake_chaos_controller_running") == 0, 30, "the controller to stop")
        assert metric_sum(metrics, "handshake_chaos_signals_total") == 4
        assert _post(f"{base}/stop", {})["success"]
        requests = json.loads(scrape(f"{base}/stats/requests"))["stats"]
        locust_total = next(row["num_requests"] for row in requests if row["name"] == "Aggregated")
        assert locust_total > 0 and metric_sum(metrics, "handshake_chaos_handshakes_total") == locust_total
    finally:
        locust.send_signal(signal.SIGINT)
        _, stderr = locust.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr[-3000:]
    summary = read_summary(report)
    records = summary["signals"]["records"]
    assert [record["id"] for record in records] == [1, 2, 3, 4]
    # Each pair came at the edited interval (0.5 s plus the replacement's wait), not the 60 s started with.
    assert records[1]["time"] - records[0]["time"] < 20 and records[3]["time"] - records[2]["time"] < 20
    assert summary["options"]["term_interval"] == 0.5 and summary["options"]["max_signals"] == 2
    assert summary["scenarios"] == ["hold-accept", "deny-close"]
    assert set(summary["outcomes_by_scenario"]) <= {"hold-accept", "deny-close"}
    assert_gone(summary["target"]["pids"])


def test_a_blank_host_means_the_embedded_deployment_and_a_bad_one_is_one_line(tmp_path):
    """Locust's form posts a cleared Host field as "": the users go to the embedded deployment, never
    to ``:///ws/probe`` with a traceback each; a host that is no URL is one line and no test."""
    web_port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--web-host", "127.0.0.1"]
    command += ["--web-port", str(web_port), "--metrics-port", str(metrics_port), "--term-interval", "60"]
    command += ["--hold-seconds", "0.2"]
    locust = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{web_port}"
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"

    def served() -> bool:
        try:
            scrape(f"{base}/")
        except OSError:
            return False
        return True

    def logs() -> list[str]:
        return list(json.loads(scrape(f"{base}/logs"))["master"])

    def failures() -> int:
        requests = json.loads(scrape(f"{base}/stats/requests"))["stats"]
        return int(next(row["num_failures"] for row in requests if row["name"] == "Aggregated"))

    try:
        wait_until(served, 60, "the web UI")
        form = {"user_count": "5", "spawn_rate": "5", "host": "", "run_time": ""}
        assert _post(f"{base}/swarm", form)["success"]
        wait_until(lambda: metric_sum(metrics, "handshake_chaos_handshakes_total") >= 10, 30, "handshakes")
        assert any("Host field is blank: the users go to the embedded deployment" in line for line in logs())
        assert _post(f"{base}/stop", {})["success"]
        accepted = metric_sum(metrics, "handshake_chaos_handshakes_total")

        assert _post(f"{base}/swarm", form | {"host": "not a url"})["success"]
        wait_until(lambda: any("fix the Host field" in line for line in logs()), 30, "the bad host in the log")
        wait_until(lambda: json.loads(scrape(f"{base}/stats/requests"))["state"] == "stopped", 30, "the test to stop")
        assert [line for line in logs() if "fix the Host field" in line][0].count("not a url") == 1
        assert metric_sum(metrics, "handshake_chaos_handshakes_total") == accepted  # no user went anywhere
        assert failures() == 0
    finally:
        locust.send_signal(signal.SIGINT)
        _, stderr = locust.communicate(timeout=120)
    assert "Traceback" not in stderr and "isn't a valid URI" not in stderr, stderr[-3000:]
