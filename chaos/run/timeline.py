"""The run over time: pending handshakes, attempts and errors so far, once a second."""

from __future__ import annotations

import time

from chaos.detect.totals import RunTotals
from chaos.results import TimelinePoint

_MAX_POINTS = 3600  # past this, every other point is dropped: the page stays small


class Timeline:
    def __init__(self, started: float) -> None:
        self.started = started
        self.points: list[TimelinePoint] = []

    def sample(self, totals: RunTotals, pending: int) -> None:
        errors: dict[str, int] = {}
        for row in totals.error_rows():  # one row per scenario: the timeline counts the signature
            key = f"{row.side}:{row.signature}"
            errors[key] = errors.get(key, 0) + row.count
        handshakes = sum(totals.outcomes().values())
        self.points.append(TimelinePoint(round(time.time() - self.started, 2), pending, handshakes, errors))
        if len(self.points) > _MAX_POINTS:
            self.points[:] = self.points[::2]
