"""The scenario records: what applies where, and what a run plans (chaos/scenarios.py)."""

from __future__ import annotations

import pytest

from chaos.errors import UsageError
from chaos.results import SCENARIOS
from chaos.scenarios import SCENARIO_SPECS, plan_scenarios, scenario


def _versions(uvicorn: str) -> dict[str, object]:
    return {"uvicorn": uvicorn, "ws_implementations": ["auto", "websockets", "wsproto"]}


def _plan(uvicorn: str = "0.54.0", ws: str = "wsproto", wanted: tuple[str, ...] = (), **kwargs: object):  # type: ignore[no-untyped-def]
    options = {"own_ws": None, "tls": False, **kwargs}
    return plan_scenarios(wanted, versions=_versions(uvicorn), ws=ws, **options)  # type: ignore[arg-type]


def test_every_scenario_has_one_record():
    assert tuple(SCENARIO_SPECS) == SCENARIOS
    assert all(spec.state and spec.weight >= 1 for spec in SCENARIO_SPECS.values())
    with pytest.raises(UsageError, match="unknown scenario 'sideways'"):
        scenario("sideways")


def test_the_default_is_every_scenario_that_applies_and_the_rest_say_why():
    plan = _plan()
    assert plan.running == ("hold-accept", "before-receive", "deny-close", "deny-stream", "accept-send", "slow-request")
    assert "needs --tls" in plan.skipped["tls-handshake"] and "probe's route" in plan.skipped["app"]
    assert "tls-handshake" in _plan(tls=True).running


def test_a_denial_response_needs_the_extension_of_that_release_and_implementation():
    assert "deny-stream" not in _plan("0.24.0").running
    assert "offers no websocket.http.response extension" in _plan("0.24.0").skipped["deny-stream"]
    assert "deny-stream" in _plan("0.25.0").running
    assert "deny-stream" not in _plan("0.34.0", ws="websockets-sansio").running
    assert "deny-stream" in _plan("0.35.0", ws="websockets-sansio").running
    # gunicorn's ASGI worker has its own implementation and offers no extension at all.
    assert "gunicorn's own websocket worker" in _plan(own_ws="gunicorn").skipped["deny-stream"]


def test_your_own_route_runs_your_app_and_the_client_held_states():
    plan = _plan(probe_route=False)
    assert plan.running == ("slow-request", "app")
    assert "your app decides" in plan.skipped["hold-accept"]


def test_asking_for_what_cannot_happen_is_one_line():
    with pytest.raises(UsageError, match="no scenario applies: deny-stream: uvicorn 0.24.0 with wsproto"):
        _plan("0.24.0", wanted=("deny-stream",))
    plan = _plan("0.24.0", wanted=("deny-stream", "hold-accept"))
    assert plan.running == ("hold-accept",) and list(plan.skipped) == ["deny-stream"]
