"""Every scenario against a real deployment: the state is reached when the signal lands, not just asked for.

Each test runs one scenario alone through a session with its users in this process, against the
embedded gunicorn+uvicorn deployment of this interpreter's uvicorn (the release uv.lock pins), and
reads the signal records: the handshakes caught pending in that scenario, and how many of them were
verifiably in its state as the signal landed (counted by the probe itself for the states it holds,
by the client for those it holds).
"""

from __future__ import annotations

from typing import Any

import pytest

from chaos.run.options import ChaosOptions
from chaos.run.session import ChaosSession
from tests.helpers import assert_gone, drive_load, local_session

# The scenario, the ws implementation, and what its caught handshakes may show besides an accept.
CASES = [
    ("hold-accept", "websockets-sansio", {"http_500", "closed_1012", "accepted"}),
    ("before-receive", "websockets-sansio", {"http_500", "closed_1012", "accepted"}),
    ("deny-close", "wsproto", {"http_403", "http_500"}),
    ("deny-stream", "websockets-sansio", {"http_403", "dropped"}),
    ("accept-send", "wsproto", {"closed_1012", "accepted"}),
    ("slow-request", "wsproto", {"dropped", "reset", "closed_1012", "accepted", "http_500"}),
]


def _run(options: ChaosOptions, users: int = 16, seconds: float = 9.0) -> tuple[ChaosSession, dict[str, Any]]:
    session = local_session(options)
    try:
        session.start()
        session.start_controller()
        drive_load(session, users=users, seconds=seconds)
    finally:
        session.close()
    summary = session.summary().to_json()
    assert_gone(summary["target"]["pids"])
    return session, summary


def _fast(**changes: Any) -> ChaosOptions:
    fast: dict[str, Any] = {
        "hold_seconds": 1.5,
        "hold_jitter": 0.3,
        "keep_open_seconds": 0.3,
        "term_interval": 1.0,
        "term_jitter": 0.3,
        "max_signals": 4,
        "metrics_port": 0,
    }
    return ChaosOptions(**(fast | changes))


@pytest.mark.parametrize(("scenario", "ws", "expected"), CASES, ids=[case[0] for case in CASES])
def test_each_scenario_is_in_its_state_when_the_signal_lands(scenario, ws, expected):
    _session, summary = _run(_fast(scenarios=[scenario], ws=ws))
    assert summary["scenarios"] == [scenario]
    records = [r for r in summary["signals"]["records"] if not r["dry_run"]]
    caught = [r for r in records if r["pending_by_scenario"].get(scenario, 0) > 0]
    assert caught, records
    # Not just asked for: the probe (or the client) counted handshakes in that very state at the signal.
    in_state = [r["in_state_by_scenario"].get(scenario, 0) for r in caught]
    assert sum(in_state) > 0, in_state
    outcomes = summary["outcomes_by_scenario"][scenario]
    assert set(outcomes) <= expected | {"lost_after_accept"}, outcomes
    assert summary["signals"]["landed_by_scenario"].get(scenario, 0) >= 1


def test_the_tls_handshake_is_paused_when_the_signal_lands():
    _session, summary = _run(_fast(scenarios=["tls-handshake"], tls=True, ws="wsproto"))
    caught = [r for r in summary["signals"]["records"] if r["in_state_by_scenario"].get("tls-handshake", 0) > 0]
    assert caught, summary["signals"]["records"]
    # A TLS handshake a shutdown cut is closed, never an error of the server's; the others were answered.
    assert set(summary["outcomes_by_scenario"]["tls-handshake"]) <= {"accepted", "closed_1012", "dropped", "reset"}
    assert not [row for row in summary["errors"] if row["side"] == "client"], summary["errors"]


def test_the_mix_plays_every_scenario_that_applies_and_a_pass_needs_each_caught():
    _session, summary = _run(_fast(ws="wsproto", max_signals=6), users=30, seconds=12.0)
    assert summary["scenarios"] == [
        "hold-accept",
        "before-receive",
        "deny-close",
        "deny-stream",
        "accept-send",
        "slow-request",
    ]
    assert set(summary["skipped_scenarios"]) == {"tls-handshake", "app"}
    assert set(summary["outcomes_by_scenario"]) == set(summary["scenarios"])
    landed = summary["signals"]["landed_by_scenario"]
    uncaught = [name for name in summary["scenarios"] if not landed.get(name)]
    if summary["gate"]["verdict"] == "inconclusive":
        assert uncaught and all(name in summary["gate"]["reason"] for name in uncaught)
    else:
        assert not uncaught


def test_the_users_of_a_mixed_run_pick_each_scenario_by_weight():
    session = local_session(_fast(ws="wsproto"))
    try:
        session.start()
        profile = session.load_profile()
    finally:
        session.close()
    weights = dict(zip(profile.scenarios, profile.scenario_weights, strict=True))
    assert weights["hold-accept"] == 3 and weights["deny-stream"] == 1 and "app" not in weights
