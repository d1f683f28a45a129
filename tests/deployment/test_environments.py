"""Real releases of uvicorn, built as of their publication date (the chaos runs on them: tests/run/test_session.py)."""

from __future__ import annotations

import pytest

from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.errors import DeploymentError, UsageError


def test_environment_of_0_19_0_has_the_dependencies_of_october_2022(release_cache):
    env = build_environment(ReleaseSpec("0.19.0"), release_cache)
    installed = env.installed()
    assert env.as_of.startswith("2022-10-19")
    assert installed["uvicorn"] == "0.19.0"
    assert installed["gunicorn"] == "20.1.0"
    assert installed["h11"] == "0.14.0"
    assert installed["wsproto"] == "1.2.0"
    assert installed["websockets"] == "10.3"
    again = build_environment(ReleaseSpec("0.19.0"), release_cache)
    assert again.reused and again.path == env.path


def test_a_version_that_does_not_exist_is_exit_4(release_cache):
    with pytest.raises(DeploymentError, match="not on the package index") as caught:
        build_environment(ReleaseSpec("99.0.0"), release_cache)
    assert caught.value.exit_code == 4


def test_a_malformed_version_is_exit_2(release_cache):
    with pytest.raises(UsageError) as caught:
        build_environment(ReleaseSpec("zero.nineteen"), release_cache)
    assert caught.value.exit_code == 2


def test_an_unreachable_index_is_exit_4(release_cache, monkeypatch):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("UV_DEFAULT_INDEX", f"http://127.0.0.1:{port}/simple")
    with pytest.raises(DeploymentError, match="cannot be reached") as caught:
        build_environment(ReleaseSpec("0.20.0"), release_cache)
    assert caught.value.exit_code == 4


def test_a_local_wheel_is_a_release_candidate(tmp_path, release_cache):
    import subprocess
    import sys

    from uv import find_uv_bin

    # A wheel as a maintainer would build it; here, the released 0.20.0 wheel.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "uvicorn==0.20.0", "-d", str(tmp_path)],
        check=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("uvicorn-0.20.0-*.whl"))
    env = build_environment(ReleaseSpec(str(wheel), as_of="2022-11-21"), release_cache)
    assert env.uvicorn == "local-0.20.0" and env.installed()["uvicorn"] == "0.20.0"
    assert env.installed()["gunicorn"] == "20.1.0"  # dependencies as of --as-of
    assert build_environment(ReleaseSpec(str(wheel), as_of="2022-11-21"), release_cache).reused
    assert find_uv_bin()


def test_0_36_0_resolves_an_uvicorn_worker_that_cannot_run_it_and_still_boots(release_cache, tmp_path):
    """uvicorn-worker 0.4.0 came nine hours after uvicorn 0.36.0: as of 0.36.0's day, 0.3.0 is picked,
    and the launcher pairs the release with uvicorn.workers instead (docs/releases.md)."""
    from chaos.deployment.launcher import Deployment, DeploymentConfig
    from chaos.load.client import hold_handshake
    from chaos.results import ACCEPTED

    environment = build_environment(ReleaseSpec(uvicorn="0.36.0"), release_cache)
    config = DeploymentConfig(python=environment.python, workers=1, run_dir=tmp_path / "run")
    with Deployment(config) as target:
        assert target.versions["uvicorn_worker"] == "0.3.0"
        assert target.worker_base() == "uvicorn.workers"
        assert hold_handshake(f"{target.url}/ws/probe?hold=0&keep=0", keep_open=0.0).outcome == ACCEPTED


@pytest.mark.newest
def test_latest_is_the_newest_stable_release_on_the_index():
    """``--uvicorn latest`` as a user feature, asserting only what is true of any newest release: it is
    on the index, no stable release outranks it, and its dependencies are resolved just past its upload."""
    from datetime import timedelta

    from packaging.version import Version

    from chaos.deployment.environments import published_versions, resolve_release

    version, as_of = resolve_release(ReleaseSpec("latest"))
    published = published_versions("uvicorn")
    stable = [Version(v) for v in published if not Version(v).is_prerelease]
    assert version in published and not Version(version).is_prerelease
    assert Version(version) == max(stable)
    assert as_of == published[version] + timedelta(seconds=1)
