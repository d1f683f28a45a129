"""Locust reading a controller on the deployment's host (chaos/run/remote.py), over real HTTP: a real
deployment, a real ``handshake-chaos controller`` serving its feed behind the token, real Locust runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chaos.detect.client import ClientRecorder, WireJudgement
from chaos.run.exposure import LocalExposure
from chaos.run.feed import FEED_PATH
from chaos.run.remote import RemoteControllers
from chaos.run.signals import SignalBook
from tests.helpers import CLI, LOCUST, free_port, metric_sum, read_summary, wait_until

TOKEN = "test-token-4f2a"


def _feed_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(f"{url}{FEED_PATH}?after=0")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _controller(target: Any, port: int, *extra: str) -> subprocess.Popen[str]:
    args = [*CLI, "controller", "--pid", str(target.master.pid), "--server-log", str(target.error_log)]
    args += ["--interval", "1", "--jitter", "0.5", "--metrics-port", str(port), "--duration", "120s", *extra]
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HANDSHAKE_CHAOS_TOKEN": TOKEN},
    )


def _locust(
    tmp_path: Path, host: str, controller: str, token: str | None, seconds: int = 12
) -> subprocess.CompletedProcess[str]:
    args = [*LOCUST, "-u", "40", "-r", "40", "-t", f"{seconds}s", "--host", host, "--chaos-controller", controller]
    args += ["--scenario", "hold-accept", "--hold-seconds", "1", "--metrics-port", "0", "--gate"]
    args += ["--chaos-report-json", str(tmp_path / "summary.json")]
    env = {key: value for key, value in os.environ.items() if key != "HANDSHAKE_CHAOS_TOKEN"}
    if token is not None:
        env["HANDSHAKE_CHAOS_TOKEN"] = token
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


def test_locust_folds_a_controllers_feed_into_its_run_and_the_token_guards_it(start_deployment, tmp_path):
    target = start_deployment(workers=2, ws="wsproto")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    controller = _controller(target, port, "--ws", "wsproto")  # what the deployment runs, as its operator knows it
    try:
        wait_until(lambda: _feed_status(url, TOKEN) == 200, 30, "the controller's feed")
        assert _feed_status(url, None) == 401 and _feed_status(url, "wrong") == 401
        # A wrong token: one line, the documented code (the deployment could not be read), no traceback.
        refused = _locust(tmp_path, target.url, url, "wrong")
        assert refused.returncode == 4, refused.stderr[-2000:]
        assert "401, the shared token is missing or wrong" in refused.stderr and "Traceback" not in refused.stderr
        run = _locust(tmp_path, target.url, url, TOKEN)
        # Locust restarts: the controller kept counting; the new run begins at its feed's newest event.
        again_dir = tmp_path / "again"
        again_dir.mkdir()
        again = _locust(again_dir, target.url, url, TOKEN, seconds=6)
        counted = metric_sum(f"{url}/metrics", "handshake_chaos_signals_total")  # no token: refused, -1
    finally:
        controller.send_signal(signal.SIGTERM)
        _, controller_err = controller.communicate(timeout=90)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    summary = read_summary(tmp_path / "summary.json")
    records = summary["signals"]["records"]
    assert records and all(record["controller"] == url for record in records)
    landed = [record for record in records if record["pending"] > 0]
    assert landed, records
    # Both ways of measuring exposure worked here (same host, no translation): matching and the probe's count.
    assert {record["exposure_measured_by"] for record in landed} == {"both"}, landed
    assert all(record["worker_pending"] > 0 for record in landed)
    assert summary["versions"]["uvicorn"] == target.versions["uvicorn"] and summary["ws"] == "wsproto"
    assert summary["options"]["token"] == "(set)" and TOKEN not in json.dumps(summary)
    assert run.returncode == summary["gate"]["exit_code"] == 0, summary["gate"]
    assert controller.returncode == 143 and "Traceback" not in controller_err
    assert counted == -1.0  # /metrics is behind the token too
    second = read_summary(again_dir / "summary.json")
    assert again.returncode == second["gate"]["exit_code"], again.stderr[-2000:]
    last_of_first = max(record["time"] for record in records)
    assert second["signals"]["records"], "the second run read no signal"
    assert all(record["time"] > last_of_first for record in second["signals"]["records"])


class _Hostile(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        body = self.bodies.pop(0) if self.bodies else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_malformed_feed_mid_run_is_one_line_and_the_reader_goes_on(caplog):
    good = {"format": 1, "controller": {}, "now": 0, "first": 1, "next": 0, "head": 0, "events": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Hostile.bodies[:] = [json.dumps(good).encode(), b"<html>", b"<html>", b"\xff\x00", json.dumps(good).encode()]
        book = SignalBook(LocalExposure(ClientRecorder(WireJudgement())), None, None)
        remote = RemoteControllers([f"http://127.0.0.1:{server.server_port}"], None, book, lambda error, url: None)
        remote.connect()
        for _ in range(4):
            assert remote.poll() == 0
        reader = remote.readers[0]
        assert reader.failures == 3
        faults = [record.message for record in caplog.records if "not a feed page" in record.message]
        assert len(faults) == 1, faults  # the same fault again stays quiet
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("host", ["0.0.0.0"])
def test_a_controller_beyond_loopback_without_the_token_refuses_to_start(start_deployment, host):
    target = start_deployment(workers=2)
    env = {key: value for key, value in os.environ.items() if key != "HANDSHAKE_CHAOS_TOKEN"}
    result = subprocess.run(
        [*CLI, "controller", "--pid", str(target.master.pid), "--metrics-host", host, "--max-signals", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2 and "beyond loopback: set the shared token" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
