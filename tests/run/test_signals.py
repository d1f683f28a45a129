"""What becomes of each signal (chaos/run/signals.py): settling waits for every exposure answer."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from locust.runners import STATE_MISSING, STATE_RUNNING

from chaos.load.ledger import Caught
from chaos.locust_plugin.distributed import BroadcastExposure
from chaos.results import Address, SignalRecord
from chaos.run.signals import SignalBook
from tests.helpers import signal_record


class _AnsweredLater:
    """An exposure whose answers come after the signal, as a Locust master's do (a narrow stand-in)."""

    def __init__(self) -> None:
        self.answered_ids: set[int] = set()

    def resolve(self, record: SignalRecord, peers: frozenset[Address]) -> Caught | None:
        return None

    def pending(self) -> int:
        return 0

    def answered(self, record: SignalRecord) -> bool:
        return record.id in self.answered_ids


def test_a_signal_settles_only_once_its_exposure_answers_are_in():
    exposure = _AnsweredLater()
    book = SignalBook(exposure, None, None)
    record = signal_record(1)
    book.state.records.append(record)
    book.on_signal(record, {4242: frozenset()})
    book.on_replaced(record)  # the deployment recovered; the workers have not answered yet
    assert not record.settled  # the metrics would otherwise count it before its pending count is whole
    exposure.answered_ids.add(1)
    book.settle_ready()
    assert record.settled


def test_the_run_closing_settles_every_signal_whatever_is_still_due():
    exposure = _AnsweredLater()
    book = SignalBook(exposure, None, None)
    record = signal_record(1)
    book.state.records.append(record)
    book.on_replaced(record)
    book.settle_all()
    assert record.settled


def _runner(states: list[str]) -> Any:
    sent: list[tuple[str, Any]] = []
    clients = SimpleNamespace(all=[SimpleNamespace(state=state) for state in states])
    return SimpleNamespace(
        clients=clients,
        register_message=lambda name, handler: None,
        send_message=lambda name, data: sent.append((name, data)),
        sent=sent,
    )


def test_a_locust_master_waits_for_every_worker_it_asked_then_adds_their_counts():
    runner = _runner([STATE_RUNNING, STATE_RUNNING, STATE_MISSING])
    exposure = BroadcastExposure(runner)
    record = signal_record(7)
    exposure.resolve(record, frozenset({("127.0.0.1", 5000)}))
    assert runner.sent and runner.sent[0][1]["id"] == 7  # every worker is asked
    assert not exposure.answered(record)  # two workers asked (the missing one is not)
    message = SimpleNamespace(data={"id": 7, "by_scenario": {"hold-accept": 2, "deny-stream": 1}, "held": {}})
    exposure._on_answer(None, message)
    assert not exposure.answered(record) and record.pending == 3
    exposure._on_answer(None, SimpleNamespace(data={"id": 7, "by_scenario": {"hold-accept": 1}, "held": {}}))
    assert exposure.answered(record)
    assert record.pending == 4 and record.pending_by_scenario == {"hold-accept": 3, "deny-stream": 1}


def test_the_scenario_of_a_server_error_is_the_one_its_worker_held_or_mixed():
    book = SignalBook(_AnsweredLater(), None, None)
    running = ("hold-accept", "deny-stream")
    one = signal_record(1)
    book.state.records.append(one)
    book.on_signal(one, {})
    one.reach.append(_reach(10, {"deny-stream": 3}))
    two = signal_record(2)
    book.state.records.append(two)
    two.reach.append(_reach(11, {"deny-stream": 2, "hold-accept": 1}))
    assert book.scenario_of(10, running) == "deny-stream"
    assert book.scenario_of(11, running) == "mixed"
    assert book.scenario_of(12, running) == "mixed"  # a worker no signal reached
    assert book.scenario_of(11, ("hold-accept",)) == "hold-accept"  # one scenario: no doubt
    # Clients waited only on slow requests, but the probe held accepts of another state there: mixed.
    three = signal_record(3)
    book.state.records.append(three)
    reach = _reach(13, {"slow-request": 2})
    reach.in_state_by_scenario = {"slow-request": 2, "deny-close": 1}
    three.reach.append(reach)
    assert book.scenario_of(13, running) == "mixed"


def _reach(pid: int, by_scenario: dict[str, int]) -> Any:
    from chaos.results import Reach

    return Reach(pid, sum(by_scenario.values()), pending_by_scenario=dict(Counter(by_scenario)))
