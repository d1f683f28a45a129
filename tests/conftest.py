from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from chaos.deployment.launcher import Deployment, DeploymentConfig, read_versions
from tests.helpers import ROOT


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
def start_deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Starts real gunicorn+uvicorn deployments; stops each one at teardown whatever happened."""
    started: list[Deployment] = []

    def start(**overrides: object) -> Deployment:
        config = DeploymentConfig(run_dir=tmp_path / f"target-{len(started)}", **overrides)  # type: ignore[arg-type]
        target = Deployment(config)
        started.append(target)
        return target.start()

    yield start
    for target in started:
        target.stop()


@pytest.fixture(scope="session")
def release_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release environments shared by the tests of one run (and across runs, if set)."""
    import os

    shared = os.environ.get("HANDSHAKE_CHAOS_TEST_CACHE")
    return Path(shared) if shared else tmp_path_factory.mktemp("envs")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def read_summary(path: Path) -> dict:  # type: ignore[type-arg]
    """A written summary.json, validated against the schema in docs/ (the contract CI jobs parse)."""
    import json

    import jsonschema

    summary = json.loads(Path(path).read_text())
    schema = json.loads((ROOT / "docs" / "summary.schema.json").read_text())
    jsonschema.validate(summary, schema)
    return summary  # type: ignore[no-any-return]


def pytest_configure(config: pytest.Config) -> None:
    """The tests press Ctrl-C on the processes they start, as a user at a terminal would. A test run
    started in the background by a non-interactive shell inherits SIGINT ignored, and so would every
    process it starts (an ignored signal stays ignored across exec): give them the terminal's default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that builds (or looks up) a past uvicorn release goes through ``release_cache``:
    it is a ``real_release`` test and needs the package index (``network``)."""
    for item in items:
        if "release_cache" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_release)
            item.add_marker(pytest.mark.network)
        if item.get_closest_marker("newest") is not None:
            item.add_marker(pytest.mark.network)


def metric_sum(metrics_url: str, name: str) -> float:
    """The sum of a metric's samples on a live /metrics (-1 while nothing answers there)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = scrape(metrics_url)
    except OSError:
        return -1.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def locust_requests(stats_csv: Path) -> int:
    """Locust's Aggregated request count in its --csv stats file (0 until it has written one)."""
    import csv

    try:
        with Path(stats_csv).open() as handle:
            rows = {row["Name"]: row for row in csv.DictReader(handle)}
    except (OSError, KeyError):
        return 0
    return int(rows.get("Aggregated", {}).get("Request Count") or 0)
