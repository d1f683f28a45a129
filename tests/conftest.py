"""Fixtures and hooks; the helpers the tests share are in tests/helpers.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.deployment.launcher import Deployment, DeploymentConfig
from tests import netns


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


@pytest.fixture
def two_hosts() -> Iterator[tuple[netns.Host, netns.Host]]:
    """Two other hosts (network namespaces joined by a veth pair, tests/netns.py), removed at teardown with
    every process started through them. A test taking it is a ``netns`` test (skipped when not root); it
    fails saying why if ``ip netns`` cannot work as root."""
    with netns.two_hosts() as hosts:
        yield hosts


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
    it is a ``real_release`` test and needs the package index (``network``). Every test that takes
    ``two_hosts`` is a ``netns`` test; ``netns`` tests are skipped when not root (CI runs as root)."""
    not_root = pytest.mark.skip(reason="network namespaces need root") if os.geteuid() != 0 else None
    for item in items:
        if "two_hosts" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.netns)
        if not_root is not None and item.get_closest_marker("netns") is not None:
            item.add_marker(not_root)
        if "release_cache" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_release)
            item.add_marker(pytest.mark.network)
        if item.get_closest_marker("newest") is not None:
            item.add_marker(pytest.mark.network)
