"""What becomes of each signal: the controller's hooks, its exposure, its windows and how its workers exited.

At a signal, every worker it reached gets a shutdown window in the server log and its pending
handshakes are counted (``ExposureStrategy``). A record is *settled* once the deployment
recovered from it and every exposure answer is in (``ExposureStrategy.answered``: in Locust's
distributed mode, answers come from the workers after the signal); from then on the metrics
count it. How each reached worker exited is read from the log once the master has said so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import get_args

from chaos.deployment.sockets import worker_peers
from chaos.detect.server import EXIT_SEVERITY, ServerDetector
from chaos.results import MIXED, Address, ExitKind, ExposureSource, Reach, SignalRecord
from chaos.run.controller import ControllerState
from chaos.run.exposure import ExposureStrategy
from chaos.run.feed import Feed


class SignalBook:
    """The controller's hooks for one run; its ``state`` carries on across controller restarts."""

    def __init__(self, exposure: ExposureStrategy, listen_port: int | None, detector: ServerDetector | None) -> None:
        self.exposure = exposure
        self.listen_port = listen_port
        self.detector = detector
        # One state for the whole run: signal ids stay unique across controller restarts.
        self.state = ControllerState()
        self._log_positions: dict[int, tuple[int, int]] = {}
        self._replaced: list[SignalRecord] = []  # recovered, waiting for exposure answers
        self._exits_unknown: list[SignalRecord] = []  # recovered, the master's verdict not logged yet
        self.listeners: list[Callable[[SignalRecord], None]] = []  # told of each signal as it is sent
        # Where the probe's workers write the states they hold (the embedded deployment's ready dir).
        self.states_dir: Path | None = None
        self._probe_states: dict[int, dict[str, int]] = {}
        # Set on a controller that serves its feed: each signal, recovery and exit is published there.
        self.feed: Feed | None = None

    def scenario_of(self, pid: int | None, running: tuple[str, ...], controller: str | None = None) -> str:
        """The scenario a server-side error of worker ``pid`` was found in: the only one ``running``, or
        the only one that worker held handshakes of when its signal landed (pending for a client, or in
        a state the probe counted); else "mixed" (the log cannot say which of several it was, and the
        run never guesses). ``controller``: the feed the error came from (pids are per host)."""
        if len(running) == 1:
            return running[0]
        for record in reversed(self.records):
            if record.controller != controller:
                continue
            reach = next((reach for reach in record.reach if reach.pid == pid), None)
            if reach is None:
                continue
            # A Locust master learns exposure per signal, not per worker it reached. The probe's own count
            # of the states it held there counts too: a connection no client still waited on (a rejection
            # closing, an accept) is the worker's all the same.
            by_scenario = reach.pending_by_scenario or record.pending_by_scenario
            in_state = reach.in_state_by_scenario or record.in_state_by_scenario
            caught = {name for counts in (by_scenario, in_state) for name, count in counts.items() if count > 0}
            return caught.pop() if len(caught) == 1 else MIXED
        return MIXED

    def attach(self, listen_port: int | None, detector: ServerDetector | None, states_dir: Path | None = None) -> None:
        """What the run found at start: where the workers listen, the log follower, the probe's states (if any)."""
        self.listen_port = listen_port
        self.detector = detector
        self.states_dir = states_dir

    @property
    def records(self) -> list[SignalRecord]:
        return self.state.records

    def snapshot(self, pid: int) -> frozenset[Address]:
        """The worker's client connections, where the log stands, and the states its probe counts, just
        before it is signalled."""
        if self.detector is not None:
            self._log_positions[pid] = self.detector.tail.position()
        self._probe_states[pid] = read_probe_states(self.states_dir, pid) if self.states_dir else {}
        return worker_peers(pid, self.listen_port) if self.listen_port else frozenset()

    def warm(self, pid: int) -> None:
        """Reads a worker's sockets ahead of its snapshot, so that one reads only what changed since."""
        if self.listen_port:
            worker_peers(pid, self.listen_port)

    def on_signal(
        self,
        record: SignalRecord,
        peers_by_worker: dict[int, frozenset[Address]],
        probe_states: dict[int, dict[str, int]] | None = None,
    ) -> int | None:
        """Opens a shutdown window on every worker the signal reached and counts what each held pending.
        ``probe_states``: the states each worker's probe held, as a controller on another host read them
        (else this book read them itself, at the snapshot)."""
        if probe_states is None:
            probe_states = {pid: self._probe_states.pop(pid, {}) for pid in peers_by_worker}
        if self.feed is not None:
            held = {pid: (peers, probe_states.get(pid, {})) for pid, peers in peers_by_worker.items()}
            self.feed.signal(record, held)
        worker_counts = [sum(counts.values()) for pid in peers_by_worker if (counts := probe_states.get(pid))]
        record.worker_pending = sum(worker_counts) if worker_counts else None
        record.worker_pending_by_scenario = _summed(probe_states.get(pid, {}) for pid in peers_by_worker)
        total: int | None = 0
        for pid, peers in peers_by_worker.items():
            position = self._log_positions.pop(pid, None)
            if not record.dry_run and self.detector is not None:
                self.detector.open_window(pid, position)
            caught = self.exposure.resolve(record, peers)
            # The probe's count of the states it holds; the client's of those it holds (added as answers come).
            in_state = dict(probe_states.get(pid, {}))
            if caught is not None:
                for name, count in caught.held.items():
                    in_state[name] = in_state.get(name, 0) + count
            for name, count in in_state.items():
                record.in_state_by_scenario[name] = record.in_state_by_scenario.get(name, 0) + count
            if caught is None:
                record.reach.append(Reach(pid, None, in_state_by_scenario=in_state))
                total = None
                continue
            pending = sum(caught.pending.values())
            reach = Reach(pid, pending, pending_by_scenario=dict(caught.pending), in_state_by_scenario=in_state)
            record.reach.append(reach)
            for name, count in caught.pending.items():
                record.pending_by_scenario[name] = record.pending_by_scenario.get(name, 0) + count
            total = None if total is None else total + pending
        for listener in self.listeners:
            listener(dataclasses.replace(record, pending=record.pending if total is None else total))
        return total

    def on_replaced(self, record: SignalRecord) -> None:
        """The deployment recovered from ``record``: it settles once its exposure answers are in."""
        self._replaced.append(record)
        self.settle_ready()
        if self.detector is not None:
            self.detector.poll()
            if any(self.detector.exit_kind(reach.pid) is None for reach in record.reach):
                # The master has not logged its verdict yet (the run is stopping): settle at close.
                self._exits_unknown.append(record)
                return
        self._settle_exit(record)

    def settle_ready(self) -> None:
        """Marks settled every recovered record whose exposure answers are all in."""
        waiting = []
        for record in self._replaced:
            if self.exposure.answered(record):
                measure_exposure(record)
                record.settled = True
            else:
                waiting.append(record)
        self._replaced = waiting

    def settle_all(self) -> None:
        """No more answers are coming (the run is closing): the metrics count every signal now, and
        every worker's exit is read as the log has it, to its end."""
        for record in self.records:
            if not record.settled:
                measure_exposure(record)
            record.settled = True
        self._replaced.clear()
        if self.detector is not None:
            # Before the deployment stops: its own shutdown is not part of the run.
            self.detector.drain()
        for record in self._exits_unknown:
            self._settle_exit(record)
        self._exits_unknown.clear()

    def _settle_exit(self, record: SignalRecord) -> None:
        """How each reached worker exited; the record keeps the most severe."""
        kinds: list[ExitKind] = []
        for reach in record.reach:
            kind: ExitKind = (self.detector.exit_kind(reach.pid) if self.detector else None) or "unknown"
            reach.exit_kind = kind
            kinds.append(kind)
        worst: ExitKind = max(kinds, key=_severity) if kinds else "unknown"
        record.exit_kind = worst
        if self.feed is not None:
            self.feed.settled(record)

    def on_remote_settled(self, record: SignalRecord, exits: dict[int, str | None]) -> None:
        """A controller on another host says the deployment recovered from ``record``, and how each worker
        it reached exited; it settles here once this run's exposure answers are in."""
        kinds: list[ExitKind] = []
        for reach in record.reach:
            said = exits.get(reach.pid)
            kind: ExitKind = said if said in _EXIT_KINDS else "unknown"  # type: ignore[assignment]
            reach.exit_kind = kind
            kinds.append(kind)
        worst: ExitKind = max(kinds, key=_severity) if kinds else "unknown"
        record.exit_kind = worst
        self._replaced.append(record)
        self.settle_ready()


def measure_exposure(record: SignalRecord) -> None:
    """Says how the record's exposure was measured, once every answer is in. Where matching the clients'
    connections found nothing but the probe counted handshakes it held (a NAT or a container's port
    mapping rewrote the client addresses on the way), the probe's count is the exposure."""
    if record.dry_run or record.exposure_measured_by is not None:
        return
    sockets, worker = record.pending, record.worker_pending or 0
    source: ExposureSource
    if sockets > 0:
        source = "both" if worker > 0 else "sockets"
    elif worker > 0:
        source = "worker"
        record.pending = worker
        record.pending_by_scenario = dict(record.worker_pending_by_scenario)
    else:
        source = "none"
    record.exposure_measured_by = source


_EXIT_KINDS = frozenset(get_args(ExitKind))


def _summed(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for name, count in one.items():
            total[name] = total.get(name, 0) + count
    return total


def read_probe_states(directory: Path, pid: int) -> dict[str, int]:
    """The states the probe of worker ``pid`` holds handshakes in right now (``handshake_chaos_states``)."""
    try:
        data = json.loads((directory / f"states-{pid}.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(name): int(count) for name, count in data.items() if isinstance(count, int) and count > 0}


def _severity(kind: ExitKind) -> int:
    return EXIT_SEVERITY.get(kind, -1)
