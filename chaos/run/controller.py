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
from chaos.results import Address, Mode, Role, SignalRecord, SignalsSummary
from chaos.target.processes import GunicornMaster, heartbeat_ticked

log = logging.getLogger(__name__)

SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "QUIT": signal.SIGQUIT}
_MASTER_SIGNALS = {"TTOU": signal.SIGTTOU, "TTIN": signal.SIGTTIN, "HUP": signal.SIGHUP}


@dataclass(frozen=True)
class ModeSpec:
    """What a chaos mode sends, to whom, and which workers that reaches."""

    signal: str
    role: Role
    reaches_all: bool = False  # HUP: every worker of the master; else the oldest one
    restore: str | None = None  # sent to the master once the reached worker exited (TTIN after TTOU)


# gunicorn's TTOU and HUP both end the *oldest* workers (Arbiter.manage_workers sorts by age).
MODES: dict[Mode, ModeSpec] = {
    "worker-term": ModeSpec("TERM", "worker"),
    "worker-int": ModeSpec("INT", "worker"),
    "master-ttou": ModeSpec("TTOU", "master", restore="TTIN"),
    "master-hup": ModeSpec("HUP", "master", reaches_all=True),
}


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
    mode: Mode = "worker-term"

    @property
    def spec(self) -> ModeSpec:
        spec = MODES[self.mode]
        # The controller command's --signal picks the worker signal of the default mode.
        return ModeSpec(self.signal_name, "worker") if self.mode == "worker-term" else spec

    def validate(self, workers: int | None = None) -> None:
        if self.interval < 0 or self.jitter < 0:
            raise UsageError("TERM interval and jitter must not be negative")
        if self.min_alive < 0:
            raise UsageError(f"min-alive must not be negative, got {self.min_alive}")
        if self.signal_name not in SIGNALS:
            raise UsageError(f"unknown signal {self.signal_name!r} (choose from {', '.join(SIGNALS)})")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.replacement_timeout <= 0:
            raise UsageError("replacement timeout must be positive")
        if self.max_signals is not None and self.max_signals < 0:
            raise UsageError("max signals must not be negative")
        if workers is not None and not self.dry_run and not self.spec.reaches_all and self.min_alive >= workers:
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
        on_signal: Callable[[SignalRecord, dict[int, frozenset[Address]]], int | None] | None = None,
        on_replaced: Callable[[SignalRecord], None] | None = None,
        state: ControllerState | None = None,
    ) -> None:
        """``snapshot(pid)`` lists the client addresses a worker holds, taken just before
        the signal; ``on_signal(record, peers_by_worker)`` is told of each signal right after
        it and may return its exposure (how many of those peers were mid-handshake)."""
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
        spec = self.config.spec
        workers = self.master.workers()
        if not workers:
            return None
        reached = workers if spec.reaches_all else workers[:1]
        # A reload starts the new workers before it stops the old ones: min-alive holds by itself.
        if not spec.reaches_all and len(workers) - 1 < self.config.min_alive and not self.config.dry_run:
            self.state.skipped_min_alive += 1
            log.info("not signalling: %d live workers, min-alive %d", len(workers), self.config.min_alive)
            return None
        peers = {worker.pid: self.snapshot(worker.pid) for worker in reached}
        snapshot_time = time.time()
        # Verified last, right before the signal: a pid that exited (and may be reused)
        # since it was listed is never signalled.
        if not all(self.master.verify_worker(worker) for worker in reached):
            self.state.lost_targets += 1
            return None
        record = SignalRecord(
            id=len(self.state.records) + 1,
            time=snapshot_time,
            worker_pid=reached[0].pid,
            role=spec.role,
            signal=spec.signal,
            pending=0,
            dry_run=self.config.dry_run,
            mode=self.config.mode,
        )
        if not self.config.dry_run and not self._send(spec.signal, spec.role, reached[0]):
            self.state.lost_targets += 1
            return None
        self.state.records.append(record)
        if self.on_signal is not None:
            pending = self.on_signal(record, peers)
            if pending is not None:
                record.pending = pending
        verb = "would send" if record.dry_run else "sent"
        if spec.role == "master":
            workers_reached = ", ".join(str(worker.pid) for worker in reached)
            whom = f"master {self.master.pid}, reaching worker {workers_reached}"
        else:
            whom = f"worker {record.worker_pid}"
        log.info("%s %s to %s (%d pending)", verb, record.signal, whom, record.pending)
        if record.dry_run:
            return record
        self._await_recovery(record, reached, {w.pid for w in workers}, len(workers), stop)
        if self.on_replaced is not None:
            self.on_replaced(record)
        return record

    def _send(self, name: str, role: Role, worker: psutil.Process) -> bool:
        """psutil re-checks the create time before signalling: the last guard against pid reuse."""
        target = self.master.process() if role == "master" else worker
        try:
            target.send_signal(SIGNALS.get(name) or _MASTER_SIGNALS[name])
        except psutil.NoSuchProcess:
            return False
        return True

    def _await_recovery(
        self,
        record: SignalRecord,
        reached: list[psutil.Process],
        before: set[int],
        expected: int,
        stop: StopFlag,
    ) -> None:
        """Until every reached worker has exited and the master serves again with ``expected`` ready workers."""
        spec = self.config.spec
        started = time.monotonic()
        deadline = started + self.config.replacement_timeout
        restored = spec.restore is None
        while time.monotonic() < deadline and not stop.is_set() and self.master.is_alive():
            if record.worker_exit_seconds is None and not any(_alive(worker) for worker in reached):
                record.worker_exit_seconds = time.monotonic() - started
            if record.worker_exit_seconds is not None and not restored:
                restored = self._send(spec.restore or "", "master", reached[0])
                if restored:
                    log.info("sent %s to master %d", spec.restore, self.master.pid)
            workers = self.master.workers()
            fresh = [w for w in workers if w.pid not in before]
            if record.worker_exit_seconds is not None and restored and len(workers) >= expected:
                # Every worker serving now must be ready: after a reload, that is the whole new generation.
                waiting_for = fresh if spec.reaches_all else fresh[:1]
                if waiting_for and all(heartbeat_ticked(w.pid) is not False for w in waiting_for):
                    record.replacement_pid = waiting_for[0].pid
                    record.replacement_seconds = time.monotonic() - started
                    return
            stop.wait(0.05)
        if time.monotonic() >= deadline:
            log.warning("the deployment did not recover within %.0fs", self.config.replacement_timeout)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
