"""Rolling TERM through a gunicorn master's workers, one at a time.

Each step: pick the oldest worker, verify it is still a live child of the master,
check the minimum-alive rule, measure its exposure, signal it, then wait until the
master has replaced it and the replacement is ready (its first heartbeat) before the
next step, like uvicorn's ``restart_all``.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import psutil

from chaos.errors import UsageError
from chaos.results import Address, SignalRecord, SignalsSummary
from chaos.target.processes import GunicornMaster, heartbeat_ticked

log = logging.getLogger(__name__)

SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "QUIT": signal.SIGQUIT}


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class ControllerConfig:
    interval: float = 3.0
    jitter: float = 1.0
    min_alive: int = 1
    dry_run: bool = False
    signal_name: str = "TERM"
    replacement_timeout: float = 60.0
    max_signals: int | None = None
    seed: int | None = None

    def validate(self, workers: int | None = None) -> None:
        if self.interval < 0 or self.jitter < 0:
            raise UsageError("TERM interval and jitter must not be negative")
        if self.min_alive < 0:
            raise UsageError(f"min-alive must not be negative, got {self.min_alive}")
        if self.signal_name not in SIGNALS:
            raise UsageError(f"unknown signal {self.signal_name!r} (choose from {', '.join(SIGNALS)})")
        if self.replacement_timeout <= 0:
            raise UsageError("replacement timeout must be positive")
        if self.max_signals is not None and self.max_signals < 0:
            raise UsageError("max signals must not be negative")
        if workers is not None and not self.dry_run and self.min_alive >= workers:
            raise UsageError(
                f"min-alive {self.min_alive} leaves no worker to signal among {workers}; "
                "use more workers or a lower --min-alive"
            )


@dataclass
class ControllerState:
    records: list[SignalRecord] = field(default_factory=list)
    skipped_min_alive: int = 0
    lost_targets: int = 0

    def summary(self) -> SignalsSummary:
        return SignalsSummary.of(self.records)


class RollingTermController:
    def __init__(
        self,
        master: GunicornMaster,
        config: ControllerConfig,
        snapshot: Callable[[int], frozenset[Address]] | None = None,
        on_signal: Callable[[SignalRecord, frozenset[Address]], int | None] | None = None,
        on_replaced: Callable[[SignalRecord], None] | None = None,
        state: ControllerState | None = None,
    ) -> None:
        """``snapshot(pid)`` lists the client addresses a worker holds, taken just before
        the signal; ``on_signal(record, peers)`` is told of each signal right after it
        and may return the worker's exposure (how many of ``peers`` were mid-handshake)."""
        config.validate()
        self.master = master
        self.config = config
        self.snapshot = snapshot or (lambda pid: frozenset())
        self.on_signal = on_signal
        self.on_replaced = on_replaced
        # A state passed in carries on across restarts: signal ids stay unique within a run.
        self.state = state if state is not None else ControllerState()
        self._random = random.Random(config.seed)

    def run(self, stop: StopFlag) -> ControllerState:
        """Roll until ``stop`` is set, the master is gone, or this run's max_signals is reached."""
        already = len(self.state.records)
        while not stop.is_set() and self.master.is_alive():
            if self.config.max_signals is not None and len(self.state.records) - already >= self.config.max_signals:
                break
            delay = self.config.interval + self._random.uniform(0, self.config.jitter)
            if stop.wait(delay):
                break
            self.step(stop)
        return self.state

    def step(self, stop: StopFlag) -> SignalRecord | None:
        workers = self.master.workers()
        if not workers:
            return None
        target = workers[0]
        if len(workers) - 1 < self.config.min_alive and not self.config.dry_run:
            self.state.skipped_min_alive += 1
            log.info("not signalling: %d live workers, min-alive %d", len(workers), self.config.min_alive)
            return None
        peers = self.snapshot(target.pid)
        snapshot_time = time.time()
        # Verified last, right before the signal: a pid that exited (and may be reused)
        # since it was listed is never signalled.
        if not self.master.verify_worker(target):
            self.state.lost_targets += 1
            return None
        record = SignalRecord(
            id=len(self.state.records) + 1,
            time=snapshot_time,
            worker_pid=target.pid,
            role="worker",
            signal=self.config.signal_name,
            pending=0,
            dry_run=self.config.dry_run,
        )
        if not self.config.dry_run:
            try:
                # psutil re-checks the create time before signalling: the last guard against pid reuse.
                target.send_signal(SIGNALS[self.config.signal_name])
            except psutil.NoSuchProcess:
                self.state.lost_targets += 1
                return None
        self.state.records.append(record)
        if self.on_signal is not None:
            pending = self.on_signal(record, peers)
            if pending is not None:
                record.pending = pending
        verb = "would send" if record.dry_run else "sent"
        log.info("%s %s to worker %d (%d pending)", verb, record.signal, target.pid, record.pending)
        if record.dry_run:
            return record
        self._await_replacement(record, target, {w.pid for w in workers}, len(workers), stop)
        if self.on_replaced is not None:
            self.on_replaced(record)
        return record

    def _await_replacement(
        self,
        record: SignalRecord,
        target: psutil.Process,
        before: set[int],
        expected: int,
        stop: StopFlag,
    ) -> None:
        started = time.monotonic()
        deadline = started + self.config.replacement_timeout
        while time.monotonic() < deadline and not stop.is_set() and self.master.is_alive():
            if record.worker_exit_seconds is None and not _alive(target):
                record.worker_exit_seconds = time.monotonic() - started
            workers = self.master.workers()
            fresh = [w for w in workers if w.pid not in before]
            if record.worker_exit_seconds is not None and len(workers) >= expected:
                ready = [w for w in fresh if heartbeat_ticked(w.pid) is not False]
                if ready:
                    record.replacement_pid = ready[0].pid
                    record.replacement_seconds = time.monotonic() - started
                    return
            stop.wait(0.05)
        if time.monotonic() >= deadline:
            log.warning("worker %d was not replaced within %.0fs", record.worker_pid, self.config.replacement_timeout)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
