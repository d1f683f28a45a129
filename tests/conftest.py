"""Fixtures and hooks; the helpers the tests share are in tests/helpers.py."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.deployment.launcher import Deployment, DeploymentConfig


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
