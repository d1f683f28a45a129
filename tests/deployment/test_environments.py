"""Real releases of uvicorn, built as of their publication date, under rolling TERM."""

from __future__ import annotations

import pytest

from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.errors import DeploymentError, UsageError
from chaos.run.options import ChaosOptions
from tests.conftest import assert_gone, drive_load, local_session

SIGNATURE_596 = "uvicorn_596_wsproto_close_during_handshake"


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


def _soak(release_cache, version: str, ws: str, seconds: float = 10.0) -> dict:
    env = build_environment(ReleaseSpec(version), release_cache)
    options = ChaosOptions(
        target_python=env.python,
        ws=ws,
        hold_seconds=1.5,
        keep_open_seconds=0.5,
        term_interval=0.7,
        term_jitter=0.3,
        metrics_port=0,
    )
    session = local_session(options)
    try:
        session.start()
        session.start_controller()
        drive_load(session, users=24, seconds=seconds)
    finally:
        session.close()
    summary = session.summary().to_json()
    assert_gone(summary["target"]["pids"])
    return summary


def _errors(summary: dict, side: str) -> dict[str, int]:
    return {row["signature"]: row["count"] for row in summary["errors"] if row["side"] == side}


def test_0_19_0_wsproto_shows_596_and_the_worker_crash(release_cache):
    summary = _soak(release_cache, "0.19.0", "wsproto")
    server = _errors(summary, "server")
    assert summary["release"] == "0.19.0" and summary["versions"]["wsproto"] == "1.2.0"
    assert summary["signals"]["landed_with_pending"] >= 1
    assert server.get(SIGNATURE_596, 0) >= 1, summary["errors"]
    assert server.get("worker_crash_during_shutdown", 0) >= 1
    assert summary["worker_exits"].get("crash", 0) >= 1
    assert (summary["gate"]["verdict"], summary["gate"]["exit_code"]) == ("fail", 1)
    row = next(r for r in summary["errors"] if r["signature"] == SIGNATURE_596)
    assert "cannot be sent during the handshake" in row["example"] and "596" in row["reference"]


def test_0_20_0_wsproto_has_none_of_596(release_cache):
    summary = _soak(release_cache, "0.20.0", "wsproto")
    assert summary["signals"]["landed_with_pending"] >= 1
    assert SIGNATURE_596 not in _errors(summary, "server")
    assert "worker_crash_during_shutdown" not in _errors(summary, "server")


def test_0_20_0_websockets_drops_pending_handshakes_on_the_wire(release_cache):
    # Before PR #1816 (0.21.0) the websockets implementation closed a pending handshake's
    # transport without any HTTP response: only the client side can see it.
    summary = _soak(release_cache, "0.20.0", "websockets")
    client = _errors(summary, "client")
    assert summary["signals"]["landed_with_pending"] >= 1
    assert client.get("handshake_dropped", 0) >= 1, summary["errors"]
    assert summary["gate"]["exit_code"] == 1


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
    from chaos.load.client import ACCEPTED, hold_handshake

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
