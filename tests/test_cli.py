from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chaos.durations import parse_duration
from chaos.errors import UsageError

CLI = [sys.executable, "-m", "chaos"]


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("10m", 600), ("1h30m", 5400), ("90", 90), ("250ms", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "5x", "-3", "1m-2s", "nan"])
def test_bad_durations(text):
    with pytest.raises(UsageError):
        parse_duration(text)


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


def test_controller_command_rolls_a_real_deployment(start_target, tmp_path):
    target = start_target(workers=2)
    before = {w.pid for w in target.master.workers()}
    pidfile = target.run_dir / "gunicorn.pid"
    done = subprocess.run(
        [*CLI, "controller", "--pidfile", str(pidfile), "--interval", "0.1", "--jitter", "0", "--max-signals", "2"]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert {r["worker_pid"] for r in records} == before
    assert not before & {w.pid for w in target.master.workers()}


def test_controller_dry_run_over_a_duration(start_target):
    target = start_target(workers=2)
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
