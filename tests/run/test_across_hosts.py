"""One run across real network boundaries: the deployment and its controller on one host, Locust (a master
and two workers) on another, each host a Linux network namespace this test makes and removes
(tests/netns.py), joined by a veth pair; then a port forwarder between them standing for a NAT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.run.feed import FEED_PATH
from tests import netns
from tests.helpers import LOCUSTFILE, ROOT, SIGNATURE_596, locust_requests, read_summary, wait_until

PYTHON = sys.executable
TOKEN = "across-hosts-7c1e"
CONTROLLER_PORT = 9646  # the namespace is the test's own: nothing else listens there


def _deploy(a: netns.Host, tmp_path: Path, python: str, ws: str) -> dict[str, Any]:
    serving = a.popen(
        [PYTHON, "-m", "tests.deployment_in_host", "--host", a.address, "--python", python, "--ws", ws]
        + ["--run-dir", str(tmp_path / "deployment")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    deployment: dict[str, Any] = json.loads(netns.read_line(serving, 120))
    return deployment


_ASK = """
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if sys.argv[2]:
    request.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        print(response.status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print(0)
"""


def _feed_answers(reader: netns.Host, a: netns.Host, token: str | None) -> int:
    """The HTTP status the controller's feed on host A answers a reader on host ``reader`` with (0: none)."""
    url = f"http://{a.address}:{CONTROLLER_PORT}{FEED_PATH}"
    return int(reader.run([PYTHON, "-c", _ASK, url, token or ""], timeout=30).stdout.strip() or 0)


def _controller(
    a: netns.Host, b: netns.Host, deployment: dict[str, Any], ws: str, tmp_path: Path
) -> subprocess.Popen[Any]:
    """``handshake-chaos controller`` on the deployment's host, its feed on that host's own address."""
    args = [PYTHON, "-m", "chaos", "controller", "--pid", str(deployment["master"])]
    args += ["--server-log", deployment["error_log"], "--ws", ws, "--interval", "1", "--jitter", "0.5"]
    args += ["--metrics-host", a.address, "--metrics-port", str(CONTROLLER_PORT), "--duration", "150s"]
    log = (tmp_path / "controller.log").open("w")
    process = a.popen(args, cwd=ROOT, env=_env(TOKEN), stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: _feed_answers(b, a, TOKEN) == 200, 60, "the controller's feed, from the other host")
    return process


def _env(token: str | None) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items() if key != "HANDSHAKE_CHAOS_TOKEN"}
    return env | ({"HANDSHAKE_CHAOS_TOKEN": token} if token else {})


def _locust_args(host: str, controller: str, tmp_path: Path, seconds: int) -> list[str]:
    args = [PYTHON, "-m", "locust", "-f", LOCUSTFILE, "--headless", "-u", "60", "-r", "60", "-t", f"{seconds}s"]
    args += ["--host", host, "--chaos-controller", controller, "--scenario", "hold-accept", "--hold-seconds", "1"]
    args += ["--metrics-port", "0", "--gate", "--chaos-report-json", str(tmp_path / "summary.json")]
    return args + ["--csv", str(tmp_path / "locust"), "--stop-timeout", "5"]


@pytest.mark.parametrize(("release", "verdict"), [("0.19.0", "fail"), ("0.55.0", "pass")])
def test_a_locust_fleet_on_another_host_measures_the_deployment_through_its_controller(
    two_hosts, release_cache, tmp_path, release, verdict
):
    a, b = two_hosts
    python = build_environment(ReleaseSpec(release), release_cache).python
    deployment = _deploy(a, tmp_path, python, "wsproto")
    _controller(a, b, deployment, "wsproto", tmp_path)
    assert _feed_answers(b, a, None) == 401  # beyond loopback: the token or nothing
    controller = f"http://{a.address}:{CONTROLLER_PORT}"
    master = b.popen(
        [*_locust_args(deployment["url"], controller, tmp_path, 20), "--master", "--expect-workers", "2"],
        cwd=tmp_path,
        env=_env(TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for _ in range(2):
        b.popen(
            [PYTHON, "-m", "locust", "-f", LOCUSTFILE, "--worker", "--master-host", "127.0.0.1"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    output, _ = master.communicate(timeout=150)
    assert "Traceback" not in output, output[-4000:]
    summary = read_summary(tmp_path / "summary.json")
    assert summary["gate"]["verdict"] == verdict, (summary["gate"], output[-3000:])
    assert master.returncode == summary["gate"]["exit_code"] == (1 if verdict == "fail" else 0)
    assert summary["versions"]["uvicorn"] == release and summary["ws"] == "wsproto"
    records = summary["signals"]["records"]
    landed = [record for record in records if record["pending"] > 0]
    assert landed and all(record["controller"] == controller for record in records)
    assert summary["signals"]["landed_with_pending"] == len(landed) > 0
    # Exposure from the Locust workers' own ledgers, matched with the worker's sockets across the veth.
    assert {record["exposure_measured_by"] for record in landed} <= {"both", "sockets"}, landed
    # Exact counts: every handshake Locust made is in the summary and on /metrics, once.
    outcomes = sum(summary["outcomes"].values())
    assert outcomes == locust_requests(tmp_path / "locust_stats.csv") > 0
    assert summary["metrics_totals"]["handshake_chaos_handshakes"] == outcomes
    found = {row["signature"]: row for row in summary["errors"]}
    if verdict == "fail":
        assert SIGNATURE_596 in found and found[SIGNATURE_596]["side"] == "server"
        assert found[SIGNATURE_596]["scenario"] == "hold-accept"
    else:
        assert not found, found


def test_behind_a_nat_the_workers_own_count_is_the_exposure(two_hosts, tmp_path):
    """A port forwarder on the deployment's host: the worker sees the forwarder's address, not the users'."""
    a, b = two_hosts
    deployment = _deploy(a, tmp_path, PYTHON, "wsproto")
    _controller(a, b, deployment, "wsproto", tmp_path)
    _, (mapped_host, mapped_port) = netns.start_forwarder(a, (a.address, deployment["port"]))
    controller = f"http://{a.address}:{CONTROLLER_PORT}"
    run = b.run(
        _locust_args(f"ws://{mapped_host}:{mapped_port}", controller, tmp_path, 15),
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=_env(TOKEN),
    )
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    summary = read_summary(tmp_path / "summary.json")
    landed = [record for record in summary["signals"]["records"] if record["pending"] > 0]
    assert landed, summary["signals"]
    # Matching found nothing (every peer is the forwarder's); the probe's own count stood in.
    assert {record["exposure_measured_by"] for record in landed} == {"worker"}, landed
    assert all(record["pending"] == record["worker_pending"] for record in landed)
    assert all(record["pending_by_scenario"] == {"hold-accept": record["pending"]} for record in landed)
    assert summary["signals"]["landed_by_scenario"].get("hold-accept", 0) == len(landed)
    assert run.returncode == summary["gate"]["exit_code"]
    assert summary["gate"]["verdict"] in ("pass", "fail")  # measured either way: not inconclusive
