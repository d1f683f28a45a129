"""Client-side detection: what a handshake caught by a shutdown showed on the wire.

``ClientRecorder`` runs where the users run (the local runner, or each Locust worker)
and judges every finished handshake; the run's totals (``chaos.detect.totals``) are kept
once (the local runner or the Locust master). Between them travels a ``ClientDelta``:
plain dicts, so Locust's worker reports carry it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chaos import catalog
from chaos.load.client import HandshakeResult
from chaos.load.ledger import Flight
from chaos.results import NO_RESPONSE_OUTCOMES
from chaos.scenarios import SCENARIO_SPECS


def client_signature(result: HandshakeResult, judgement: WireJudgement) -> str | None:
    """The client-side error a handshake caught by a shutdown shows on the wire, if any, judged by
    what a clean shutdown may do to a handshake in its scenario's state (``chaos.scenarios``)."""
    spec = SCENARIO_SPECS.get(result.scenario)  # type: ignore[call-overload]
    outcome = result.outcome
    if spec is not None and outcome in spec.healthy_without_response:
        return None
    if outcome in NO_RESPONSE_OUTCOMES:
        return catalog.CLIENT_PREFIX + outcome
    if outcome.startswith("os_error_"):
        return catalog.CLIENT_PREFIX + "os_error"
    if spec is not None and outcome in spec.incomplete:
        return catalog.CLIENT_PREFIX + outcome if judgement.incomplete_is_error else None
    if judgement.http_rejection_is_error and result.status is not None and result.status != 101:
        if spec is not None and result.status == spec.own_denial_status:
            return None  # the app's own denial, answered as it asked
        return catalog.CLIENT_PREFIX + f"http_{result.status}"
    return None


@dataclass(frozen=True)
class WireJudgement:
    """Which answers on the wire count as errors beyond those that carry no answer at all."""

    http_rejection_is_error: bool = False
    incomplete_is_error: bool = False


def _pair(key: str) -> tuple[str, str]:
    scenario, _, name = key.partition("/")
    return scenario, name


@dataclass
class ClientDelta:
    """Counts between where the users run and where the totals are kept, by (scenario, name)."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.errors)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for Locust's worker reports: keys "scenario/name"."""
        return {
            "outcomes": {f"{scenario}/{name}": n for (scenario, name), n in self.outcomes.items()},
            "errors": {f"{scenario}/{name}": n for (scenario, name), n in self.errors.items()},
            "examples": dict(self.examples),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClientDelta:
        return cls(
            Counter({_pair(key): n for key, n in data.get("outcomes", {}).items()}),
            Counter({_pair(key): n for key, n in data.get("errors", {}).items()}),
            dict(data.get("examples", {})),
        )


class ClientRecorder:
    """Judges finished handshakes; hands the counts to ``sink`` at once, or keeps them for ``take``."""

    def __init__(self, judgement: WireJudgement, sink: Callable[[ClientDelta], None] | None = None) -> None:
        self.judgement = judgement
        self.sink = sink
        self._delta = ClientDelta()
        self._lock = threading.Lock()

    def finished(self, result: HandshakeResult) -> None:
        delta = ClientDelta(outcomes=Counter({(result.scenario, result.outcome): 1}))
        if result.exposed_by is not None:
            self._judge(result, delta)
        self._emit(delta)

    def caught_late(self, flights: Iterable[Flight]) -> None:
        """Handshakes that had ended (and were counted) before their signal was known."""
        delta = ClientDelta()
        for flight in flights:
            if isinstance(flight.payload, HandshakeResult):
                flight.payload.exposed_by = flight.exposed_by
                self._judge(flight.payload, delta)
        if delta:
            self._emit(delta)

    def _judge(self, result: HandshakeResult, delta: ClientDelta) -> None:
        signature = client_signature(result, self.judgement)
        if signature is not None:
            delta.errors[(result.scenario, signature)] += 1
            delta.examples.setdefault(signature, f"{result.outcome}: {result.detail}".rstrip(": "))

    def _emit(self, delta: ClientDelta) -> None:
        if self.sink is not None:
            self.sink(delta)
            return
        with self._lock:
            self._delta.outcomes.update(delta.outcomes)
            self._delta.errors.update(delta.errors)
            for signature, example in delta.examples.items():
                self._delta.examples.setdefault(signature, example)

    def take(self) -> ClientDelta:
        with self._lock:
            delta, self._delta = self._delta, ClientDelta()
        return delta
