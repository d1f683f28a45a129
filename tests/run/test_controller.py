from __future__ import annotations

import subprocess
import sys
import threading
import time

import psutil
import pytest

from chaos.deployment.processes import ServerMaster
from chaos.deployment.sockets import worker_peers
from chaos.errors import UsageError
from chaos.load.client import hold_handshake
from chaos.load.ledger import HandshakeLedger
from chaos.results import ACCEPTED
from chaos.run.controller import ControllerConfig, RollingSignalController
from chaos.run.options import ChaosOptions
from tests.helpers import wait_until


def test_rolls_every_worker_and_keeps_the_master(start_deployment):
    target = start_deployment(workers=3, graceful_timeout=5)
    master = target.master
    original = [w.pid for w in master.workers()]
    config = ControllerConfig(interval=0.1, jitter=0.0, min_alive=1, max_signals=3)
    signalled: set[int] = set()
    violations: list[int] = []
    controller = RollingSignalController(
        master, config, on_signal=lambda record, peers: signalled.add(record.worker_pid)
    )
    stop = threading.Event()

    def watch_min_alive() -> None:
        while not stop.is_set():
            unsignalled = [w for w in master.workers() if w.pid not in signalled]
            if len(unsignalled) < config.min_alive:
                violations.append(len(unsignalled))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_min_alive)
    watcher.start()
    try:
        state = controller.run(stop)
    finally:
        stop.set()
        watcher.join()

    assert [r.worker_pid for r in state.records] == original  # oldest first, each once
    now = [w.pid for w in master.workers()]
    assert len(now) == 3 and not set(now) & set(original)
    assert master.is_alive() and master.pid == target.master.pid
    assert all(r.replacement_pid in now for r in state.records)
    assert all(r.replacement_seconds is not None and r.worker_exit_seconds is not None for r in state.records)
    assert not violations


def test_min_alive_rule_blocks_the_signal(start_deployment):
    target = start_deployment(workers=2)
    before = [w.pid for w in target.master.workers()]
    controller = RollingSignalController(target.master, ControllerConfig(interval=0, jitter=0, min_alive=2))
    assert controller.step(threading.Event()) is None
    assert controller.state.skipped_min_alive == 1
    assert [w.pid for w in target.master.workers()] == before
    # The option model says so before any controller runs (the controller takes valid values).
    with pytest.raises(UsageError, match="min-alive 2 leaves no worker to signal among 2"):
        ChaosOptions(min_alive=2).check_workers(2)


def test_dry_run_sends_nothing(start_deployment):
    target = start_deployment(workers=2)
    before = [w.pid for w in target.master.workers()]
    controller = RollingSignalController(
        target.master, ControllerConfig(interval=0.05, jitter=0, dry_run=True, max_signals=3)
    )
    state = controller.run(threading.Event())
    assert len(state.records) == 3 and state.summary().sent == 0
    assert all(record.dry_run for record in state.records)
    assert [w.pid for w in target.master.workers()] == before


def test_a_process_that_is_not_a_child_is_never_verified(start_deployment):
    target = start_deployment(workers=1)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not target.master.verify_worker(psutil.Process(stranger.pid))
        assert target.master.verify_worker(target.master.workers()[0])
    finally:
        stranger.kill()
        stranger.wait()


def test_a_worker_that_exited_is_not_verified_again(start_deployment):
    target = start_deployment(workers=2)
    worker = target.master.workers()[0]
    worker.terminate()
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 15, "worker exit")
    assert not target.master.verify_worker(worker)


def test_not_a_gunicorn_master_is_refused():
    with pytest.raises(UsageError, match="not a gunicorn or uvicorn master"):
        ServerMaster(psutil.Process().pid)


def test_exposure_counts_the_pending_handshakes_each_worker_holds(start_deployment):
    target = start_deployment(workers=2)
    ledger = HandshakeLedger()
    results = []
    url = f"{target.url}/ws/probe?hold=3&keep=5"
    threads = [
        threading.Thread(target=lambda: results.append(hold_handshake(url, keep_open=0, ledger=ledger)))
        for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(ledger) == 12, 10, "12 handshakes in flight")

    def exposure() -> int:
        now = time.time()
        return sum(
            ledger.mark(1, worker_peers(w.pid, target.port), now, commit=False).pending.total()
            for w in target.master.workers()
        )

    wait_until(lambda: exposure() == 12, 10, "12 pending held by the workers")
    for thread in threads:
        thread.join()
    assert [r.outcome for r in results] == [ACCEPTED] * 12
    assert all(r.exposed_by is None for r in results)
    assert exposure() == 0


def test_signal_ids_stay_unique_across_controller_restarts(start_deployment):
    from chaos.run.controller import ControllerState

    target = start_deployment(workers=2)
    state = ControllerState()  # what a session keeps across Locust's stop/start
    for max_signals in (2, 2):  # max-signals counts per test run (each Locust start)
        config = ControllerConfig(interval=0.01, jitter=0, dry_run=True, max_signals=max_signals)
        RollingSignalController(target.master, config, state=state).run(threading.Event())
    assert [record.id for record in state.records] == [1, 2, 3, 4]


def test_the_next_recipient_is_read_ahead_of_its_signal(start_deployment):
    """``warm``: each signalled worker's sockets are read a moment before its snapshot (so that reads only
    what changed: a cold read of thousands of descriptors would fall in the moment the deployment moves on)."""
    target = start_deployment(workers=2)
    events: list[tuple[str, int]] = []

    def snapshot(pid: int) -> frozenset[tuple[str, int]]:
        events.append(("snapshot", pid))
        return frozenset()

    controller = RollingSignalController(
        target.master,
        ControllerConfig(interval=0.1, jitter=0.0, min_alive=1, max_signals=2),
        snapshot=snapshot,
        warm=lambda pid: events.append(("warm", pid)),
    )
    state = controller.run(threading.Event())
    assert len(state.records) == 2
    for record in state.records:
        at = events.index(("snapshot", record.worker_pid))
        assert ("warm", record.worker_pid) in events[:at], events
