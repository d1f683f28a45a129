"""The run's counts, kept exactly once (the local runner, or the Locust master).

The summary, the gate and ``/metrics`` all read from here, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable

from chaos import catalog
from chaos.detect.client import ClientDelta
from chaos.detect.server import DetectedError
from chaos.results import ErrorRow, Side


class RunTotals:
    """Outcomes of every handshake attempt, and every handshake-time shutdown error by side and signature."""

    def __init__(self) -> None:
        self._outcomes: Counter[tuple[str, str]] = Counter()  # (scenario, outcome)
        self._errors: dict[tuple[Side, str, str], ErrorRow] = {}  # (side, signature, scenario)
        self._lock = threading.Lock()
        self._first_seen: list[Callable[[ErrorRow], None]] = []
        self._regression_of: Callable[[str], str | None] = lambda signature: None
        self.last_error_time: float | None = None  # wall clock of the latest error counted

    def judge_regressions(self, regression_of: Callable[[str], str | None]) -> None:
        """``regression_of(signature)``: the release that had fixed it for what is under test, or None."""
        with self._lock:
            self._regression_of = regression_of
            for row in self._errors.values():
                row.regression_fixed_in = regression_of(row.signature)

    def on_first_seen(self, callback: Callable[[ErrorRow], None]) -> None:
        """``callback(row)`` once per signature, the first time it is counted (outside the lock)."""
        self._first_seen.append(callback)

    def add_client(self, delta: ClientDelta) -> None:
        new = []
        with self._lock:
            self._outcomes.update(delta.outcomes)
            for (scenario, signature), count in delta.errors.items():
                row, first = self._row("client", signature, None, scenario)
                row.count += count
                self.last_error_time = time.time()
                row.example = row.example or delta.examples.get(signature, "")
                new += [row] if first else []
        self._announce(new)

    def add_server(self, error: DetectedError, scenario: str) -> None:
        """A server-side error, found in the handshake state ``scenario`` (or "mixed": several)."""
        with self._lock:
            row, first = self._row("server", error.signature, error.reference, scenario)
            row.count += 1
            self.last_error_time = time.time()
            row.example = row.example or error.example
        self._announce([row] if first else [])

    def _row(self, side: Side, signature: str, reference: str | None, scenario: str) -> tuple[ErrorRow, bool]:
        """The row of (side, signature, scenario); ``first`` when the signature is new on this side."""
        key = (side, signature, scenario)
        if key in self._errors:
            return self._errors[key], False
        first = not any(known[:2] == key[:2] for known in self._errors)
        self._errors[key] = ErrorRow(
            side=side,
            signature=signature,
            count=0,
            example="",
            reference=reference or catalog.reference(signature),
            regression_fixed_in=self._regression_of(signature),
            scenario=scenario,
        )
        return self._errors[key], first

    def _announce(self, rows: list[ErrorRow]) -> None:
        for row in rows:
            for callback in self._first_seen:
                callback(dataclasses.replace(row))

    def reset(self) -> None:
        """Starts the counts over (Locust's Reset Stats), so they keep matching Locust's request count."""
        with self._lock:
            self._outcomes.clear()
            self._errors.clear()
            self.last_error_time = None

    def outcomes(self) -> dict[str, int]:
        """Every outcome, all scenarios together."""
        totals: Counter[str] = Counter()
        with self._lock:
            for (_scenario, outcome), count in self._outcomes.items():
                totals[outcome] += count
        return dict(sorted(totals.items()))

    def outcomes_by_scenario(self) -> dict[str, dict[str, int]]:
        with self._lock:
            items = list(self._outcomes.items())
        nested: dict[str, dict[str, int]] = {}
        for (scenario, outcome), count in sorted(items):
            nested.setdefault(scenario, {})[outcome] = count
        return nested

    def error_rows(self) -> list[ErrorRow]:
        """Server side first, then by count: the order every table shows."""
        with self._lock:
            rows = [dataclasses.replace(row) for row in self._errors.values()]
        return sorted(rows, key=lambda r: (r.side != "server", -r.count, r.signature))
