from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from chaos.launcher import Target, TargetConfig, read_versions

ROOT = Path(__file__).resolve().parent.parent


def installed_ws_implementations() -> list[str]:
    return [name for name in read_versions(sys.executable)["ws_implementations"] if name != "auto"] + ["auto"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is truthy; fail with ``what`` past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """No socket listens there: a server could bind it now (TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def assert_gone(pids: list[int]) -> None:
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes still running: {alive}"


@pytest.fixture
def start_target(tmp_path: Path) -> Iterator[Callable[..., Target]]:
    """Starts real gunicorn+uvicorn deployments; stops each one at teardown whatever happened."""
    started: list[Target] = []

    def start(**overrides: object) -> Target:
        config = TargetConfig(run_dir=tmp_path / f"target-{len(started)}", **overrides)  # type: ignore[arg-type]
        target = Target(config)
        started.append(target)
        return target.start()

    yield start
    for target in started:
        target.stop()
