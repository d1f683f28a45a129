"""How a session learns a signal's exposure: how many handshakes the signalled worker held pending.

The session is given one strategy when it is built. ``LocalExposure`` asks this process's own
ledger (a local runner, the tests, the controller command); a Locust master is given the
broadcast to its workers instead (``chaos.locust_plugin.distributed``).
"""

from __future__ import annotations

from typing import Protocol

from chaos.detect.client import ClientRecorder
from chaos.load.ledger import Caught, HandshakeLedger
from chaos.results import Address, SignalRecord


class ExposureStrategy(Protocol):
    def resolve(self, record: SignalRecord, peers: frozenset[Address]) -> Caught | None:
        """Marks the handshakes of ``peers`` the signal caught; returns how many by scenario (None: the
        answers come later, into ``record``)."""

    def pending(self) -> int:
        """Handshakes in flight right now, wherever the users run."""

    def answered(self, record: SignalRecord) -> bool:
        """Every answer about ``record``'s exposure is in (its pending count no longer changes)."""


class LocalExposure:
    """The users run in this process: its ledger knows their handshakes."""

    def __init__(self, recorder: ClientRecorder, ledger: HandshakeLedger | None = None) -> None:
        self.recorder = recorder
        self.ledger = ledger if ledger is not None else HandshakeLedger()

    def resolve(self, record: SignalRecord, peers: frozenset[Address]) -> Caught:
        caught = self.ledger.mark(record.id, peers, record.time, commit=not record.dry_run)
        self.recorder.caught_late(caught.late)
        return caught

    def pending(self) -> int:
        return len(self.ledger)

    def answered(self, record: SignalRecord) -> bool:
        return True  # resolved in place, at the signal
