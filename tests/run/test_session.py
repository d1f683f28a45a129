"""A chaos session driven directly, its users in this process: real releases under rolling TERM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.run.options import ChaosOptions
from tests.helpers import SIGNATURE_596, assert_gone, drive_load, local_session


def _soak(release_cache: Path, version: str, ws: str, seconds: float = 10.0) -> dict[str, Any]:
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
    summary: dict[str, Any] = session.summary().to_json()
    assert_gone(summary["target"]["pids"])
    return summary


def _errors(summary: dict[str, Any], side: str) -> dict[str, int]:
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
