"""Counting a run exactly once.

``ClientRecorder`` runs where the users run (the local runner, or each Locust worker)
and judges every finished handshake; ``RunTotals`` runs once per run (the local runner
or the Locust master) and holds everything the summary, the gate and the metrics use.
Between them travels a ``ClientDelta``: plain dicts, so Locust's worker reports carry it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chaos import catalog
from chaos.detection import DetectedError
from chaos.exposure import Flight
from chaos.metrics import ChaosMetrics
from chaos.wsclient import NO_RESPONSE_OUTCOMES, HandshakeResult


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


@dataclass
class ErrorTally:
    side: str
    signature: str
    count: int = 0
    example: str = ""
    reference: str | None = None


class RunTotals:
    """What one run counted, kept once; mirrors every change into the metrics."""

    def __init__(self, metrics: ChaosMetrics | None = None) -> None:
        self.metrics = metrics
        self.outcomes: Counter[str] = Counter()
        self.errors: dict[tuple[str, str], ErrorTally] = {}
        self._lock = threading.Lock()

    def add_client(self, delta: ClientDelta) -> None:
        with self._lock:
            self.outcomes.update(delta.outcomes)
            for signature, count in delta.errors.items():
                tally = self._tally("client", signature, None)
                tally.count += count
                tally.example = tally.example or delta.examples.get(signature, "")
        if self.metrics is not None:
            self.metrics.count_outcomes(delta.outcomes)
            self.metrics.count_errors("client", delta.errors)

    def add_server(self, error: DetectedError) -> None:
        with self._lock:
            tally = self._tally("server", error.signature, error.reference)
            tally.count += 1
            tally.example = tally.example or error.example
        if self.metrics is not None:
            self.metrics.count_errors("server", {error.signature: 1})

    def _tally(self, side: str, signature: str, reference: str | None) -> ErrorTally:
        key = (side, signature)
        if key not in self.errors:
            self.errors[key] = ErrorTally(side, signature, reference=reference or catalog.reference(signature))
        return self.errors[key]

    def error_rows(self) -> list[dict[str, Any]]:
        rows = sorted(self.errors.values(), key=lambda t: (t.side != "server", -t.count, t.signature))
        return [
            {
                "side": t.side,
                "signature": t.signature,
                "count": t.count,
                "example": t.example,
                "reference": t.reference,
            }
            for t in rows
        ]
