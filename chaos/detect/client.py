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


def client_signature(result: HandshakeResult, http_rejection_is_error: bool) -> str | None:
    """The client-side error a handshake caught by a shutdown shows on the wire, if any."""
    if result.outcome in NO_RESPONSE_OUTCOMES:
        return catalog.CLIENT_PREFIX + result.outcome
    if result.outcome.startswith("os_error_"):
        return catalog.CLIENT_PREFIX + "os_error"
    if http_rejection_is_error and result.status is not None and result.status != 101:
        return catalog.CLIENT_PREFIX + f"http_{result.status}"
    return None


@dataclass
class ClientDelta:
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "errors": dict(self.errors), "examples": dict(self.examples)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClientDelta:
        return cls(Counter(data.get("outcomes", {})), Counter(data.get("errors", {})), dict(data.get("examples", {})))


class ClientRecorder:
    """Judges finished handshakes; hands the counts to ``sink`` at once, or keeps them for ``take``."""

    def __init__(self, http_rejection_is_error: bool, sink: Callable[[ClientDelta], None] | None = None) -> None:
        self.http_rejection_is_error = http_rejection_is_error
        self.sink = sink
        self._delta = ClientDelta()
        self._lock = threading.Lock()

    def finished(self, result: HandshakeResult) -> None:
        delta = ClientDelta(outcomes=Counter({result.outcome: 1}))
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
        signature = client_signature(result, self.http_rejection_is_error)
        if signature is not None:
            delta.errors[signature] += 1
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
