"""Handshake scenarios: which state of a websocket handshake a signal finds, one record each.

A server's shutdown path looks at flags ("handshake complete", "response started", "request
complete") that each state of a handshake sets differently, and the failures this tool hunts
live in all of them. Each record says what the probe app does (``handshake_chaos_probe`` reads
``scenario=NAME`` from the query), what the client does (``ClientBehaviour``), when it applies
to a release, server family and ws implementation, and which outcomes a clean shutdown may
give a handshake it caught there. Nothing else spells out a scenario's behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from chaos.errors import UsageError
from chaos.results import (
    DENIAL_TRUNCATED,
    DROPPED,
    FRAME_TRUNCATED,
    LOST_AFTER_ACCEPT,
    RESET,
    SCENARIOS,
    TLS_FAILED,
    Scenario,
)

# What the client does: send the upgrade request and wait for the answer; send it one header line
# at a time; read the answer slowly (the 101 and a first frame stay in flight); pause its TLS handshake.
ClientBehaviour = Literal["request", "trickle-request", "slow-read", "paused-tls"]


@dataclass(frozen=True)
class ScenarioSpec:
    name: Scenario
    state: str  # the handshake state a signal finds, in a user's words
    client: ClientBehaviour
    # What a handshake caught there may end as after a clean shutdown, besides an HTTP answer or an
    # accept that was then closed with a close frame: the server never had a request to answer.
    healthy_without_response: frozenset[str] = frozenset()
    # Incomplete answers: counted as outcomes, errors with --incomplete-is-error.
    incomplete: frozenset[str] = frozenset({LOST_AFTER_ACCEPT})
    # The status the app itself answers with (its denial): never a shutdown's rejection.
    own_denial_status: int | None = None
    weight: int = 1
    needs_tls: bool = False
    # Where it is played: on the probe's route (the probe holds the state), on the user's own route
    # (--ws-path: the app decides), or on either (the client holds the state).
    route: Literal["probe", "app", "any"] = "probe"
    # The ASGI extension the app needs in scope["extensions"], and the first uvicorn release that
    # offers it per ws implementation (None: no release does).
    extension: str | None = None
    extension_from: Mapping[str, str | None] | None = None
    own_ws_support: Mapping[str, bool] | None = None  # a family's own implementation (gunicorn's ASGI worker)

    def applies(
        self, *, versions: Mapping[str, Any], ws: str, own_ws: str | None, tls: bool, probe_route: bool = True
    ) -> str | None:
        """None when the scenario can happen here; else why not, in one phrase."""
        if self.route == "probe" and not probe_route:
            return "the load goes to your app's route (--ws-path): your app decides what its handshakes do"
        if self.route == "app" and probe_route:
            return "the load goes to the probe's route (the other scenarios name its states)"
        if self.needs_tls and not tls:
            return "needs --tls (the embedded deployment serving wss://)"
        if self.extension is None:
            return None
        if own_ws is not None:
            supported = (self.own_ws_support or {}).get(own_ws, False)
            return None if supported else f"{own_ws}'s own websocket worker offers no {self.extension} extension"
        return self._extension_reason(versions.get("uvicorn"), ws, versions.get("ws_implementations") or ())

    def _extension_reason(self, uvicorn: object, ws: str, available: Iterable[str]) -> str | None:
        assert self.extension_from is not None
        candidates = [ws] if ws != "auto" else [name for name in available if name != "auto"]
        for implementation in candidates:
            first = self.extension_from.get(implementation)
            if first is not None and _at_least(uvicorn, first):
                return None
        firsts = ", ".join(f"{name} {first}" for name, first in self.extension_from.items() if first)
        return f"uvicorn {uvicorn} with {ws} offers no {self.extension} extension (from: {firsts})"


def _at_least(version: object, first: str) -> bool:
    try:
        return Version(str(version)) >= Version(first)
    except InvalidVersion:
        return True  # a source tree names its own version: let the probe find out


# A request the server never had in full (slow-request), or a connection whose TLS never completed,
# has nothing to answer: a clean shutdown may close it.
_NEVER_A_REQUEST = frozenset({DROPPED, RESET, TLS_FAILED})
SCENARIO_SPECS: dict[Scenario, ScenarioSpec] = {
    spec.name: spec
    for spec in (
        ScenarioSpec(
            name="hold-accept",
            state="the app awaits work (an auth or database lookup) before websocket.accept",
            client="request",
            weight=3,
        ),
        ScenarioSpec(
            name="before-receive",
            state="the app has not yet taken websocket.connect off its queue",
            client="request",
        ),
        ScenarioSpec(
            name="deny-close",
            state="the app closes before accepting (a 403 rejection) after its work",
            client="request",
            own_denial_status=403,
        ),
        ScenarioSpec(
            name="deny-stream",
            state="the app streams a denial response (websocket.http.response.start, then body chunks)",
            client="request",
            incomplete=frozenset({DENIAL_TRUNCATED}),
            own_denial_status=403,
            extension="websocket.http.response",
            # uvicorn PR #1916 (0.25.0) for wsproto and websockets; the sans-I/O implementation has it
            # from its first release (0.35.0, PR #2540). gunicorn's ASGI worker offers no extensions.
            extension_from={"wsproto": "0.25.0", "websockets": "0.25.0", "websockets-sansio": "0.35.0"},
            own_ws_support={"gunicorn": False},
        ),
        ScenarioSpec(
            name="accept-send",
            state="the app accepted and sent a first frame: the 101 and the frame are in flight",
            client="slow-read",
            incomplete=frozenset({FRAME_TRUNCATED, LOST_AFTER_ACCEPT}),
        ),
        ScenarioSpec(
            name="slow-request",
            state="the client is still sending the upgrade request: the server's HTTP parser is mid-request",
            client="trickle-request",
            healthy_without_response=_NEVER_A_REQUEST,
            route="any",
        ),
        ScenarioSpec(
            name="tls-handshake",
            state="the client's TLS handshake is still in progress",
            client="paused-tls",
            healthy_without_response=_NEVER_A_REQUEST,
            needs_tls=True,
            route="any",
        ),
        ScenarioSpec(
            name="app",
            state="whatever your own app's route (--ws-path) does with a handshake",
            client="request",
            weight=3,
            route="app",
        ),
    )
}
assert tuple(SCENARIO_SPECS) == SCENARIOS, "every scenario has its record, in the vocabulary's order"


def scenario(name: str) -> ScenarioSpec:
    try:
        return SCENARIO_SPECS[name]  # type: ignore[index]
    except KeyError:
        raise UsageError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIO_SPECS)})") from None


@dataclass(frozen=True)
class ScenarioPlan:
    """The scenarios a run exercises, and those asked for (or implied) that cannot happen here."""

    running: tuple[Scenario, ...]
    skipped: dict[str, str]

    def weights(self) -> list[int]:
        return [SCENARIO_SPECS[name].weight for name in self.running]


def plan_scenarios(
    wanted: Iterable[str],
    *,
    versions: Mapping[str, Any],
    ws: str,
    own_ws: str | None,
    tls: bool,
    probe_route: bool = True,
) -> ScenarioPlan:
    """What runs: every scenario asked for (none asked: every one) that applies; the rest said why not.

    Asked for by name, a scenario that cannot happen here is an error (exit 2) unless others run:
    a run never pretends to test a state it cannot reach."""
    asked = list(dict.fromkeys(wanted))
    for name in asked:
        scenario(name)
    candidates = asked or list(SCENARIO_SPECS)
    running: list[Scenario] = []
    skipped: dict[str, str] = {}
    for name in candidates:
        spec = SCENARIO_SPECS[name]  # type: ignore[index]
        reason = spec.applies(versions=versions, ws=ws, own_ws=own_ws, tls=tls, probe_route=probe_route)
        if reason is None:
            running.append(spec.name)
        else:
            skipped[name] = reason
    if not running:
        raise UsageError("no scenario applies: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
    return ScenarioPlan(tuple(running), skipped)
