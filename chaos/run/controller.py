"""Rolling signals through a gunicorn deployment, the way a real deploy stops it.

Signals come every ``interval`` (+ jitter) seconds, one at a time. Each step: pick what the
mode signals (the oldest worker, or the master), verify it is still the live process it was
(and a child of the master), check the minimum-alive rule, measure the exposure of every
worker it reaches, signal it, then wait until the deployment serves again with every worker
ready before the next step, like uvicorn's ``restart_all``. ``master-term`` and ``rollout``
also start masters, through the deployment that owns the listening socket (``Redeployable``).
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import psutil

from chaos.deployment.processes import ServerMaster
from chaos.errors import UsageError
from chaos.results import Address, Mode, Role, SignalRecord, SignalsSummary

log = logging.getLogger(__name__)

# What a worker can be sent to stop it (the controller command's --signal), and what a master is sent.
WORKER_SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "QUIT": signal.SIGQUIT}
_MASTER_SIGNALS = {"TTOU": signal.SIGTTOU, "TTIN": signal.SIGTTIN, "HUP": signal.SIGHUP}


@dataclass(frozen=True)
class ModeSpec:
    """What a chaos mode sends, to whom, and which workers that reaches."""

    signal: str
    role: Role
    reaches_all: bool = False  # HUP: every worker of the master; else the oldest one
    restore: str | None = None  # sent to the master once the reached worker exited (TTIN after TTOU)
    # The master itself goes: "restart" starts a new one once it has exited (on the same socket);
    # "surge" starts the new one first and signals the oldest once the new one is ready.
    redeploy: Literal["restart", "surge"] | None = None


# gunicorn's TTOU and HUP both end the *oldest* workers (Arbiter.manage_workers sorts by age).
MODE_SPECS: dict[Mode, ModeSpec] = {
    "worker-term": ModeSpec("TERM", "worker"),
    "worker-int": ModeSpec("INT", "worker"),
    "master-ttou": ModeSpec("TTOU", "master", restore="TTIN"),
    "master-hup": ModeSpec("HUP", "master", reaches_all=True),
    "master-term": ModeSpec("TERM", "master", reaches_all=True, redeploy="restart"),
    "rollout": ModeSpec("TERM", "master", reaches_all=True, redeploy="surge"),
}
# Modes whose deployment the tool must be able to start again: embedded only.
REDEPLOYING_MODES: tuple[Mode, ...] = tuple(mode for mode, spec in MODE_SPECS.items() if spec.redeploy)


class Redeployable(Protocol):
    """A deployment that can start another master on its listening socket (the embedded one)."""

    def masters(self) -> list[ServerMaster]: ...

    def start_master(self) -> ServerMaster: ...

    def restore(self) -> None:
        """Starts masters until the deployment has its configured number again."""


class StopEvent(Protocol):
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
        spec = MODE_SPECS[self.mode]
        # The controller command's --signal picks the worker signal of the default mode.
        return ModeSpec(self.signal_name, "worker") if self.mode == "worker-term" else spec


# How long before a signal its recipients' sockets are read once ahead (``RollingSignalController.warm``).
WARM_AHEAD_SECONDS = 1.0


@dataclass
class ControllerState:
    records: list[SignalRecord] = field(default_factory=list)
    skipped_min_alive: int = 0
    lost_recipients: int = 0

    def summary(self) -> SignalsSummary:
        return SignalsSummary.of(self.records)


class RollingSignalController:
    def __init__(
        self,
        master: ServerMaster,
        config: ControllerConfig,
        snapshot: Callable[[int], frozenset[Address]] | None = None,
        on_signal: Callable[[SignalRecord, dict[int, frozenset[Address]]], int | None] | None = None,
        on_replaced: Callable[[SignalRecord], None] | None = None,
        state: ControllerState | None = None,
        deployment: Redeployable | None = None,
        warm: Callable[[int], None] | None = None,
    ) -> None:
        """``snapshot(pid)`` lists the client addresses a worker holds, taken just before
        the signal; ``on_signal(record, peers_by_worker)`` is told of each signal right after
        it and may return its exposure (how many of those peers were mid-handshake).
        ``deployment`` starts masters for the modes that replace the master itself. ``warm(pid)`` is called
        for the next recipients a moment before their signal (``WARM_AHEAD_SECONDS``): the snapshot then
        reads only what changed since."""
        if config.spec.redeploy and deployment is None:
            raise UsageError(f"--mode {config.mode} restarts the deployment: only the embedded one can be")
        self.master = master
        self.deployment = deployment
        self.config = config
        self.snapshot = snapshot or (lambda pid: frozenset())
        self.on_signal = on_signal
        self.on_replaced = on_replaced
        self.warm = warm
        # A state passed in carries on across restarts: signal ids stay unique within a run.
        self.state = state if state is not None else ControllerState()
        self._random = random.Random(config.seed)

    def run(self, stop: StopEvent) -> ControllerState:
        """Roll until ``stop`` is set, the master is gone, or this run's max_signals is reached."""
        already = len(self.state.records)
        if self.deployment is not None and self.config.spec.redeploy:
            # A run stopped mid-restart left the deployment short of a master.
            self.deployment.restore()
            self.master = self.deployment.masters()[0]
        # The interval runs from one signal to the next, so the configured rate is reached whatever the
        # recovery takes; a recovery longer than the interval only delays the next signal until it is done.
        next_at = time.monotonic() + self._interval()
        while not stop.is_set() and self._serving():
            if self.config.max_signals is not None and len(self.state.records) - already >= self.config.max_signals:
                break
            if self.warm is not None:
                if stop.wait(max(0.0, next_at - WARM_AHEAD_SECONDS - time.monotonic())):
                    break
                self._warm_next()
            if stop.wait(max(0.0, next_at - time.monotonic())):
                break
            next_at = time.monotonic() + self._interval()
            self.step(stop)
        return self.state

    def _warm_next(self) -> None:
        """The workers the next signal will reach, their sockets read now (a cold read of thousands of
        descriptors would otherwise fall in the moment the deployment moves on)."""
        assert self.warm is not None
        spec = self.config.spec
        if spec.redeploy:
            masters = self.deployment.masters() if self.deployment is not None else []
            upcoming = masters[0].workers() if masters else []
        else:
            workers = self.master.workers()
            upcoming = workers if spec.reaches_all else workers[:1]
        for worker in upcoming:
            self.warm(worker.pid)

    def _interval(self) -> float:
        return self.config.interval + self._random.uniform(0, self.config.jitter)

    def _serving(self) -> bool:
        if self.deployment is not None and self.config.spec.redeploy:
            return bool(self.deployment.masters())
        return self.master.is_alive()

    def step(self, stop: StopEvent) -> SignalRecord | None:
        spec = self.config.spec
        if spec.redeploy:
            return self._redeploy_step(stop)
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
            self.state.lost_recipients += 1
            return None
        recipient = self.master.process() if spec.role == "master" else reached[0]
        record = self._fire(spec.role, spec.signal, recipient, self.master, reached, peers, snapshot_time)
        if record is None:
            return None
        if record.dry_run:
            return record
        self._await_recovery(record, reached, {w.pid for w in workers}, len(workers), stop)
        if self.on_replaced is not None:
            self.on_replaced(record)
        return record

    def _redeploy_step(self, stop: StopEvent) -> SignalRecord | None:
        """TERM a whole master: restarted after it exits ("restart"), or replaced by one started and
        ready before it is signalled ("surge", a rolling update with one surge)."""
        assert self.deployment is not None
        spec = self.config.spec
        started_new: ServerMaster | None = None
        masters = self.deployment.masters()
        if not masters:
            return None
        if spec.redeploy == "surge" and not self.config.dry_run:
            surge_started = time.monotonic()
            started_new = self.deployment.start_master()
            log.info("surge: master %d ready in %.2fs", started_new.pid, time.monotonic() - surge_started)
        old = masters[0]
        reached = old.workers()
        peers = {worker.pid: self.snapshot(worker.pid) for worker in reached}
        snapshot_time = time.time()
        # Verified last, right before the signal: the master and each worker are the processes listed.
        if not reached or not old.is_alive() or not all(old.verify_worker(worker) for worker in reached):
            self.state.lost_recipients += 1
            return None
        record = self._fire("master", spec.signal, old.process(), old, reached, peers, snapshot_time)
        if record is None:
            return None
        if record.dry_run:
            return record
        started = time.monotonic()
        deadline = started + self.config.replacement_timeout
        while time.monotonic() < deadline and not stop.is_set():
            if not old.is_alive() and not any(_alive(worker) for worker in reached):
                record.worker_exit_seconds = time.monotonic() - started
                break
            stop.wait(0.05)
        if record.worker_exit_seconds is None:
            # Stopped meanwhile (the next run tops the deployment up), or the master hangs.
            if not stop.is_set():
                log.warning("master %d did not exit within %.0fs", old.pid, self.config.replacement_timeout)
            return record
        if started_new is None and not stop.is_set():
            # Clients meanwhile wait in the listening socket's backlog: nothing is refused.
            started_new = self.deployment.start_master()
        if started_new is not None:
            record.replacement_pid = started_new.pid
            record.replacement_seconds = time.monotonic() - started
            self.master = started_new
        if self.on_replaced is not None:
            self.on_replaced(record)
        return record

    def _fire(
        self,
        role: Role,
        name: str,
        recipient: psutil.Process,
        master: ServerMaster,
        reached: list[psutil.Process],
        peers: dict[int, frozenset[Address]],
        snapshot_time: float,
    ) -> SignalRecord | None:
        """Sends ``name`` to ``recipient`` (or, in dry-run, only says so) and records it with its exposure;
        None when the recipient is gone by then (psutil re-checks its create time: a reused pid is never signalled)."""
        record = SignalRecord(
            id=len(self.state.records) + 1,
            time=snapshot_time,
            worker_pid=reached[0].pid,
            role=role,
            signal=name,
            pending=0,
            dry_run=self.config.dry_run,
            mode=self.config.mode,
            master_pid=master.pid,
        )
        if not self.config.dry_run and not _signal(recipient, name):
            self.state.lost_recipients += 1
            return None
        self.state.records.append(record)
        if self.on_signal is not None:
            pending = self.on_signal(record, peers)
            if pending is not None:
                record.pending = pending
        if role == "master":
            whom = f"master {master.pid}, reaching worker {', '.join(str(worker.pid) for worker in reached)}"
        else:
            whom = f"worker {record.worker_pid}"
        verb = "would send" if record.dry_run else "sent"
        log.info("%s %s to %s (%d pending)", verb, name, whom, record.pending)
        return record

    def _await_recovery(
        self,
        record: SignalRecord,
        reached: list[psutil.Process],
        before: set[int],
        expected: int,
        stop: StopEvent,
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
                restored = _signal(self.master.process(), spec.restore or "")
                if restored:
                    log.info("sent %s to master %d", spec.restore, self.master.pid)
            workers = self.master.workers()
            fresh = [w for w in workers if w.pid not in before]
            if record.worker_exit_seconds is not None and restored and len(workers) >= expected:
                # Every worker serving now must be ready: after a reload, that is the whole new generation.
                waiting_for = fresh if spec.reaches_all else fresh[:1]
                if waiting_for and all(self.master.ready(w.pid) is not False for w in waiting_for):
                    record.replacement_pid = waiting_for[0].pid
                    record.replacement_seconds = time.monotonic() - started
                    return
            stop.wait(0.05)
        if time.monotonic() >= deadline:
            log.warning("the deployment did not recover within %.0fs", self.config.replacement_timeout)


def _signal(process: psutil.Process, name: str) -> bool:
    """psutil re-checks the create time before signalling: a reused pid is never signalled."""
    try:
        process.send_signal(WORKER_SIGNALS.get(name) or _MASTER_SIGNALS[name])
    except psutil.NoSuchProcess:
        return False
    return True


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
