from __future__ import annotations

import psutil
import pytest
from websockets.sync.client import connect

from chaos.deployment.launcher import Deployment, DeploymentConfig
from chaos.errors import DeploymentError, UsageError
from chaos.load.client import hold_handshake
from chaos.results import ACCEPTED
from tests.helpers import assert_gone, installed_ws_implementations, port_is_free, wait_until


@pytest.mark.parametrize("ws", installed_ws_implementations())
def test_starts_serves_a_real_handshake_and_stops(start_deployment, ws):
    target = start_deployment(ws=ws, workers=2)
    master_pid = target.master.pid
    workers = [w.pid for w in target.master.workers()]
    assert len(workers) == 2
    assert target.versions["uvicorn"] and target.versions["gunicorn"] and target.versions["python"]

    with connect(f"{target.url}/ws/probe?hold=0.1&keep=5", open_timeout=10) as websocket:
        websocket.send("ping")
        assert websocket.recv(timeout=5) == "ping"
    result = hold_handshake(f"{target.url}/ws/probe?hold=0.2&keep=5", keep_open=0.2)
    assert result.outcome == ACCEPTED and 0.2 <= result.handshake_seconds < 5

    # The worker really runs the ws implementation asked for.
    assert psutil.Process(workers[0]).environ()["HANDSHAKE_CHAOS_WS"] == ws
    port = target.port
    assert target.stop() == 0
    assert_gone([master_pid, *workers])
    assert port_is_free(port)


def test_error_log_is_captured(start_deployment):
    target = start_deployment(workers=1)
    assert "Booting worker with pid" in target.error_log.read_text()


def test_non_loopback_host_is_refused_before_anything_starts():
    with pytest.raises(UsageError, match="loopback"):
        Deployment(DeploymentConfig(host="192.0.2.1"))  # bad input: documentation range, never contacted


def test_unknown_ws_implementation_is_a_usage_error():
    with pytest.raises(UsageError, match="ws implementation"):
        Deployment(DeploymentConfig(ws="tornado"))


def test_app_that_cannot_be_imported_fails_with_one_line_and_leaves_nothing(start_deployment):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(DeploymentError, match="gunicorn") as caught:
        start_deployment(app="no_such_module_here:app", startup_timeout=30)
    assert "\n" not in str(caught.value)
    leftover = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert_gone(sorted(leftover))


def test_missing_interpreter_is_a_target_error():
    with pytest.raises(DeploymentError, match="not found"):
        Deployment(DeploymentConfig(python="/nonexistent/python3")).start()


def test_probe_health_route(start_deployment):
    import urllib.request

    target = start_deployment(workers=1)
    with urllib.request.urlopen(f"http://127.0.0.1:{target.port}/healthz", timeout=5) as response:
        assert response.status == 200
        assert b'"pid"' in response.read()


@pytest.mark.parametrize("worker_base", ["uvicorn_worker", "uvicorn.workers"])
def test_both_worker_classes(start_deployment, worker_base):
    target = start_deployment(workers=1, ws="wsproto", worker_base=worker_base)
    assert target.worker_base() == worker_base
    assert hold_handshake(f"{target.url}/ws/probe?hold=0.1&keep=5", keep_open=0.1).outcome == ACCEPTED


def test_the_control_socket_stays_in_the_run_dir(start_deployment):
    from packaging.version import Version

    target = start_deployment(workers=1)
    command = " ".join(target.master.process().cmdline())
    if Version(target.versions["gunicorn"]) >= Version("25.1"):
        assert f"--control-socket {target.run_dir / 'gunicorn.ctl'}" in command
        # gunicorn opens it beside its arbiter loop, not necessarily before the workers are ready.
        wait_until((target.run_dir / "gunicorn.ctl").is_socket, 10, "the control socket in the run dir")
    else:  # older gunicorn has no control socket, and no flag for it
        assert "--control-socket" not in command


@pytest.mark.parametrize(
    ("uvicorn", "uvicorn_worker", "base"),
    [
        ("0.29.0", None, "uvicorn.workers"),  # before the package existed for it
        ("0.30.0", "0.2.0", "uvicorn_worker"),
        ("0.35.0", "0.3.0", "uvicorn_worker"),
        ("0.36.0", "0.3.0", "uvicorn.workers"),  # what resolving 0.36.0 as of its day picks: cannot run it
        ("0.36.0", "0.4.0", "uvicorn_worker"),
        ("0.54.0", "0.4.0", "uvicorn_worker"),
        ("0.55.0.dev0", "0.3.0", "uvicorn.workers"),
    ],
)
def test_the_worker_class_pairing_rule(uvicorn, uvicorn_worker, base):
    from chaos.deployment.launcher import paired_worker_base

    assert paired_worker_base(uvicorn, uvicorn_worker) == base


@pytest.mark.parametrize("server", ["uvicorn-workers", "gunicorn-asgi"])
def test_every_server_family_starts_says_when_each_worker_is_ready_serves_and_stops(start_deployment, server):
    target = start_deployment(server=server, workers=2, ws="wsproto")
    master = target.master
    workers = [w.pid for w in master.workers()]
    assert len(workers) == 2 and target.worker_base() == server
    # Readiness came from each worker's own lifespan startup, not from a timer.
    assert sorted(p.name for p in target.ready_dir.iterdir()) == sorted(f"ready-{pid}" for pid in workers)
    assert all(master.ready(pid) for pid in workers)
    assert hold_handshake(f"{target.url}/ws/probe?hold=0.2&keep=5", keep_open=0.2).outcome == ACCEPTED
    # Both log as gunicorn does ([time] [pid] [LEVEL]): one parser for every family.
    assert f"[{workers[0]}] [INFO]" in target.error_log.read_text()
    port = target.port
    target.stop()
    assert_gone([master.pid, *workers])
    assert port_is_free(port)
