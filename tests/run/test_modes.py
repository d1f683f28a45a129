"""Chaos modes on a real gunicorn deployment: the right processes get the right signals, it recovers."""

from __future__ import annotations

import threading

import psutil
import pytest

from chaos.run.controller import MODES, ControllerConfig, RollingTermController
from tests.conftest import wait_until


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("mode", ["worker-int", "master-ttou", "master-hup"])
def test_each_mode_signals_what_it_says_and_the_deployment_recovers(start_target, mode):
    target = start_target(workers=2, graceful_timeout=2)
    master = target.master
    original = [w.pid for w in master.workers()]
    reached_by_signal: dict[int, list[int]] = {}

    def on_signal(record, peers_by_worker):
        reached_by_signal[record.id] = sorted(peers_by_worker)
        return 0

    config = ControllerConfig(interval=0.05, jitter=0, max_signals=1, mode=mode)
    state = RollingTermController(master, config, on_signal=on_signal).run(threading.Event())
    [record] = state.records
    spec = MODES[mode]
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


def test_a_reload_waits_for_the_whole_new_generation(start_target):
    target = start_target(workers=3, graceful_timeout=2)
    original = {w.pid for w in target.master.workers()}
    config = ControllerConfig(interval=0.05, jitter=0, max_signals=2, mode="master-hup")
    state = RollingTermController(target.master, config).run(threading.Event())
    assert len(state.records) == 2
    first, second = state.records
    assert first.role == "master" and first.signal == "HUP"
    # The second reload reached only the first reload's generation.
    assert not (original & {w.pid for w in target.master.workers()})
    assert second.worker_pid not in original
