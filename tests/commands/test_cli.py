from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chaos.errors import UsageError
from chaos.timespan import parse_timespan

CLI = [sys.executable, "-m", "chaos"]


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("10m", 600), ("1h30m", 5400), ("90", 90), (" 2m ", 120)])
def test_durations(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds)


# "1500ms" and "1.5s" are refused because Locust's own -t refuses them: a soak never accepts a
# duration the Locust process it starts would then reject.
@pytest.mark.parametrize("text", ["", "ten", "5x", "-3", "1m-2s", "nan", "1500ms", "1.5s"])
def test_bad_durations(text):
    with pytest.raises(UsageError):
        parse_timespan(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["controller", "--pid", "999999999"], "no process"),
        (["controller", "--pidfile", "/nonexistent/gunicorn.pid"], "cannot read pidfile"),
        (["controller", "--pid", "1", "--duration", "soon"], "bad duration"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_controller_command_rolls_a_real_deployment(start_deployment, tmp_path):
    target = start_deployment(workers=2)
    before = {w.pid for w in target.master.workers()}
    pidfile = target.run_dir / "gunicorn.pid"
    done = subprocess.run(
        [*CLI, "controller", "--pidfile", str(pidfile), "--interval", "0.1", "--jitter", "0", "--max-signals", "2"]
        + ["--json", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert {r["worker_pid"] for r in records} == before
    assert not before & {w.pid for w in target.master.workers()}


def test_controller_dry_run_over_a_duration(start_deployment):
    target = start_deployment(workers=2)
    before = [w.pid for w in target.master.workers()]
    done = subprocess.run(
        [
            *CLI,
            "controller",
            "--pid",
            str(target.master.pid),
            "--interval",
            "0.2",
            "--jitter",
            "0",
            "--dry-run",
            "--duration",
            "1s",
        ]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert records and all(r["dry_run"] for r in records)
    assert [w.pid for w in target.master.workers()] == before


def test_controller_command_serves_its_own_metrics(start_deployment):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.helpers import free_port, scrape, wait_until

    target = start_deployment(workers=2)
    port = free_port()
    controller = subprocess.Popen(
        [*CLI, "controller", "--pid", str(target.master.pid), "--interval", "0.3", "--jitter", "0"]
        + ["--duration", "60s", "--metrics-port", str(port), "--server-log", str(target.error_log)]
        + ["--release", "prod-2026-11", "--ws", "wsproto"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    signals: list[float] = []

    def counted_a_signal() -> bool:
        try:
            text = scrape(f"http://127.0.0.1:{port}/metrics")
        except OSError:
            return False
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "handshake_chaos_signals_total" and sample.value >= 1:
                    assert sample.labels["release"] == "prod-2026-11" and sample.labels["ws"] == "wsproto"
                    signals.append(sample.value)
        return bool(signals)

    try:
        wait_until(counted_a_signal, 30, "a TERM counted on the controller's /metrics")
    finally:
        controller.send_signal(__import__("signal").SIGTERM)  # its handler only sets a flag
        _, stderr = controller.communicate(timeout=90)
    assert controller.returncode == 143, stderr  # stopped by SIGTERM before any end of its own: interrupted
    assert "Traceback" not in stderr and "server-side errors: 0" in stderr
    assert target.master.is_alive() and len(target.master.workers()) == 2
