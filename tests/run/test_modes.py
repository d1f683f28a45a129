"""Chaos modes on a real gunicorn deployment: the right processes get the right signals, it recovers."""

from __future__ import annotations

import threading
from collections import Counter

import psutil
import pytest

from chaos.deployment.processes import ServerMaster
from chaos.errors import UsageError
from chaos.load.client import hold_handshake
from chaos.results import ACCEPTED, REFUSED, Address, SignalRecord
from chaos.run.controller import MODE_SPECS, ControllerConfig, RollingSignalController
from tests.helpers import wait_until


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("mode", ["worker-int", "master-ttou", "master-hup"])
def test_each_mode_signals_what_it_says_and_the_deployment_recovers(start_deployment, mode):
    target = start_deployment(workers=2, graceful_timeout=2)
    master = target.master
    original = [w.pid for w in master.workers()]
    reached_by_signal: dict[int, list[int]] = {}

    def on_signal(record, peers_by_worker):
        reached_by_signal[record.id] = sorted(peers_by_worker)
        return 0

    config = ControllerConfig(interval=0.05, jitter=0, max_signals=1, mode=mode)
    state = RollingSignalController(master, config, on_signal=on_signal).run(threading.Event())
    [record] = state.records
    spec = MODE_SPECS[mode]
    assert (record.signal, record.role, record.mode) == (spec.signal, spec.role, mode)
    expected_reach = sorted(original) if spec.reaches_all else [original[0]]  # the oldest
    assert reached_by_signal[1] == expected_reach
    assert record.replacement_seconds is not None, "the deployment did not recover"
    # The reached workers are gone, the others untouched, the master the same, the count restored.
    assert not _alive(expected_reach)
    untouched = [pid for pid in original if pid not in expected_reach]
    assert _alive(untouched) == untouched
    assert master.is_alive() and master.pid == target.master.pid
    wait_until(lambda: len(master.workers()) == 2, 30, "two workers again")


def test_a_reload_waits_for_the_whole_new_generation(start_deployment):
    target = start_deployment(workers=3, graceful_timeout=2)
    original = {w.pid for w in target.master.workers()}
    config = ControllerConfig(interval=0.05, jitter=0, max_signals=2, mode="master-hup")
    state = RollingSignalController(target.master, config).run(threading.Event())
    assert len(state.records) == 2
    first, second = state.records
    assert first.role == "master" and first.signal == "HUP"
    # The second reload reached only the first reload's generation.
    assert not (original & {w.pid for w in target.master.workers()})
    assert second.worker_pid not in original


def _everything_under(masters) -> list[int]:  # type: ignore[no-untyped-def]
    return [m.pid for m in masters] + [w.pid for m in masters for w in m.workers()]


def test_master_term_restarts_the_deployment_on_its_socket_and_no_client_is_refused(start_deployment):
    """Like socket activation: while no master serves, connections wait in the backlog."""
    target = start_deployment(workers=2, graceful_timeout=2)
    port = target.port
    first = target.master
    original = _everything_under([first])
    outcomes: Counter[str] = Counter()
    stop_clients = threading.Event()

    def clients() -> None:
        # Bounded: at most 2,000 handshakes, and only while the controller runs.
        for _ in range(2000):
            if stop_clients.is_set():
                return
            outcomes[hold_handshake(f"{target.url}/ws/probe?hold=0.2&keep=1", keep_open=0.0).outcome] += 1

    load = [threading.Thread(target=clients) for _ in range(4)]
    for thread in load:
        thread.start()
    try:
        wait_until(lambda: sum(outcomes.values()) >= 8, 30, "handshakes before the first TERM")
        config = ControllerConfig(interval=0.3, jitter=0, max_signals=2, mode="master-term")
        state = RollingSignalController(first, config, deployment=target).run(threading.Event())
        wait_until(lambda: sum(outcomes.values()) >= 8 + 40, 60, "handshakes after the restarts")
    finally:
        stop_clients.set()
        for thread in load:
            thread.join(timeout=30)
    assert [r.role for r in state.records] == ["master", "master"] and all(r.signal == "TERM" for r in state.records)
    assert state.records[0].master_pid == first.pid
    assert state.records[1].master_pid == state.records[0].replacement_pid
    assert all(r.worker_exit_seconds is not None and r.replacement_seconds is not None for r in state.records)
    assert all(len(r.reach) == 0 for r in state.records)  # no on_signal hook here: reach is the session's
    # Everything the first master ran is gone; a new master serves the same port.
    assert not _alive(original)
    [now] = target.masters()
    assert now.pid == state.records[1].replacement_pid and now.listen_address() == ("127.0.0.1", port)
    assert outcomes[REFUSED] == 0 and outcomes[ACCEPTED] > 0, outcomes


def test_rollout_surges_a_new_master_then_terms_the_oldest(start_deployment):
    target = start_deployment(workers=1, graceful_timeout=2, replicas=2)
    masters = target.masters()
    assert len(masters) == 2 and len({m.listen_address() for m in masters}) == 1
    original = _everything_under(masters)
    seen_during: list[int] = []

    def on_signal(record: SignalRecord, peers_by_worker: dict[int, frozenset[Address]]) -> int:
        # At the signal the surge master is already serving: three masters for a moment.
        seen_during.append(len(target.masters()))
        return 0

    config = ControllerConfig(interval=0.1, jitter=0, max_signals=2, mode="rollout")
    state = RollingSignalController(masters[0], config, on_signal=on_signal, deployment=target).run(threading.Event())
    assert [r.master_pid for r in state.records] == [m.pid for m in masters]  # oldest first
    assert seen_during == [3, 3]
    assert not _alive(original)
    now = target.masters()
    assert [m.pid for m in now] == [r.replacement_pid for r in state.records]
    assert all(len(m.workers()) == 1 for m in now)


def test_master_term_and_rollout_need_a_deployment_the_tool_can_restart(start_deployment):
    target = start_deployment(workers=1)
    for mode in ("master-term", "rollout"):
        with pytest.raises(UsageError, match="only the embedded"):
            RollingSignalController(target.master, ControllerConfig(mode=mode))


def test_a_master_that_is_gone_is_never_signalled(start_deployment):
    """A master listed, then gone before the signal (its pid free for reuse), is not signalled."""
    target = start_deployment(workers=1, graceful_timeout=1)
    old = target.master
    old.process().terminate()
    wait_until(lambda: not old.is_alive(), 30, "the master to exit")
    target.masters()  # reaped: its pid may now be reused

    class Stale:
        def masters(self) -> list[ServerMaster]:
            return [old]

        def start_master(self) -> ServerMaster:
            raise AssertionError("nothing is restarted for a master that was never signalled")

        def restore(self) -> None:
            pass

    controller = RollingSignalController(old, ControllerConfig(mode="master-term"), deployment=Stale())
    assert controller.step(threading.Event()) is None
    assert controller.state.records == []


@pytest.mark.parametrize("mode", ["worker-term", "master-hup", "master-term"])
def test_uvicorns_own_supervisor_under_each_of_its_modes(start_deployment, mode):
    target = start_deployment(server="uvicorn-workers", workers=2, graceful_timeout=2)
    first = target.master
    original = [w.pid for w in first.workers()]
    config = ControllerConfig(interval=0.1, jitter=0, max_signals=1, mode=mode)
    state = RollingSignalController(first, config, deployment=target).run(threading.Event())
    [record] = state.records
    assert record.replacement_seconds is not None, "the deployment did not recover"
    reached = original[:1] if mode == "worker-term" else original
    assert not _alive(reached)
    if mode == "master-term":
        assert not first.is_alive() and target.master is not None and target.master.pid == record.replacement_pid
    else:
        assert first.is_alive() and target.master.pid == first.pid
    wait_until(lambda: len(target.master.workers()) == 2, 30, "two workers again")
    assert all(target.master.ready(w.pid) for w in target.master.workers())
