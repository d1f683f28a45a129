"""The handshakes this process has in flight, by the client's local address.

The client side knows which of its connections are mid-handshake (request sent, no
response yet) by their local address; the kernel knows which worker owns the server
end of each connection (``chaos.deployment.sockets.worker_peers``). Their intersection is
a worker's exposure at a signal: exact for any app, not just the probe, as long as the
clients and the deployment share this host. The ledger also attributes each handshake
to the signal whose shutdown caught it, for client-side detection.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from chaos.results import Address

# A handshake that ends between the controller's socket snapshot and the marking of
# the ledger was still pending at the snapshot; this much history catches it.
_RECENT_SECONDS = 10.0


@dataclass
class Caught:
    """What one signal caught among this process's handshakes."""

    pending: Counter[str]  # by scenario
    held: Counter[str]  # of those, still held in their state by the client itself, by scenario
    late: list[Flight]  # already ended: judged now


@dataclass
class Flight:
    """One handshake between request and response."""

    started: float
    scenario: str = "hold-accept"
    exposed_by: int | None = None
    # The client itself holds its scenario's state (its request unfinished, its TLS handshake paused)
    # from ``started`` until ``released`` (None: still holding).
    client_held: bool = False
    released: float | None = None

    def release(self) -> None:
        """The client let go of its state: the request is whole, the TLS handshake done."""
        if self.released is None:
            self.released = time.time()

    def held_at(self, moment: float) -> bool:
        return self.client_held and self.started <= moment and (self.released is None or moment < self.released)

    ended: float | None = None
    payload: object | None = None


class HandshakeLedger:
    """The handshakes this process has in flight, and the signals that caught them."""

    def __init__(self) -> None:
        self._in_flight: dict[Address, Flight] = {}
        self._recent: deque[tuple[Address, Flight]] = deque()
        self._lock = threading.Lock()

    def begin(self, address: Address, scenario: str = "hold-accept", client_held: bool = False) -> Flight:
        flight = Flight(started=time.time(), scenario=scenario, client_held=client_held)
        with self._lock:
            self._in_flight[address] = flight
        return flight

    def end(self, address: Address) -> Flight | None:
        """The handshake got its answer (or failed); returns its flight with ``exposed_by`` set if caught."""
        now = time.time()
        with self._lock:
            flight = self._in_flight.pop(address, None)
            if flight is None:
                return None
            flight.ended = now
            self._recent.append((address, flight))
            while self._recent and self._recent[0][1].ended < now - _RECENT_SECONDS:  # type: ignore[operator]
                self._recent.popleft()
        return flight

    def mark(self, signal_id: int, peers: frozenset[Address], snapshot_time: float, commit: bool = True) -> Caught:
        """Attributes to ``signal_id`` every handshake of ``peers`` pending at ``snapshot_time``.

        Returns how many there were by scenario, how many of those the client itself still held
        in its scenario's state, and the flights among them that have already ended (their
        outcome is known, so the caller judges them now). ``commit=False`` only counts (a dry-run
        signal caught nothing).
        """
        pending: Counter[str] = Counter()
        held: Counter[str] = Counter()
        late: list[Flight] = []
        with self._lock:
            for address in peers:
                flight = self._in_flight.get(address)
                if flight is not None and flight.started <= snapshot_time:
                    if commit:
                        flight.exposed_by = signal_id
                    pending[flight.scenario] += 1
                    held[flight.scenario] += flight.held_at(snapshot_time)
            for address, flight in self._recent:
                if (
                    address in peers
                    and flight.exposed_by is None
                    and flight.started <= snapshot_time < (flight.ended or 0)
                ):
                    pending[flight.scenario] += 1
                    held[flight.scenario] += flight.held_at(snapshot_time)
                    if commit:
                        flight.exposed_by = signal_id
                        late.append(flight)
        return Caught(pending, +held, late)

    def __len__(self) -> int:
        return len(self._in_flight)
