"""Locust's distributed mode: the master owns the run, workers judge their own handshakes.

At each signal the master sends the signalled worker's client addresses to every Locust
worker; each marks the handshakes of its own that the signal caught and answers with how
many. Workers send their counts inside Locust's own stats reports, so the master's totals
equal Locust's request count: nothing is counted twice or lost.
"""

from __future__ import annotations

import time
from typing import Any

from locust.runners import STATE_MISSING

from chaos.detect.client import ClientDelta, ClientRecorder
from chaos.detect.totals import RunTotals
from chaos.load.ledger import HandshakeLedger
from chaos.results import Address, SignalRecord

TERM_MESSAGE = "handshake_chaos_term"
EXPOSURE_MESSAGE = "handshake_chaos_exposure"
REPORT_KEY = "handshake_chaos"
# A worker that went missing does not hold a signal's exposure open past this.
ANSWER_SECONDS = 10.0


class BroadcastExposure:
    """The master's exposure strategy: ask every worker, add up the answers as they arrive."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self._asked: dict[int, SignalRecord] = {}
        # Per signal: the workers asked, the answers still due, and when it was asked.
        self._due: dict[int, tuple[int, float]] = {}
        self._pending_by_worker: dict[str, int] = {}
        runner.register_message(EXPOSURE_MESSAGE, self._on_answer)

    def resolve(self, record: SignalRecord, peers: frozenset[Address]) -> None:
        """Asks every worker; each answer adds its handshakes, by scenario, to ``record``."""
        if not record.dry_run:
            self._asked[record.id] = record
            workers = sum(1 for node in self.runner.clients.all if node.state != STATE_MISSING)
            self._due[record.id] = (workers, time.monotonic())
            data = {"id": record.id, "time": record.time, "peers": [list(peer) for peer in peers]}
            self.runner.send_message(TERM_MESSAGE, data)
        return None

    def pending(self) -> int:
        return sum(self._pending_by_worker.values())

    def answered(self, record: SignalRecord) -> bool:
        """Every worker asked has answered; one that went missing is waited for at most ANSWER_SECONDS."""
        due = self._due.get(record.id)
        if due is None:
            return True
        remaining, asked_at = due
        if remaining <= 0 or time.monotonic() - asked_at > ANSWER_SECONDS:
            del self._due[record.id]
            return True
        return False

    def _on_answer(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        record = self._asked.get(int(msg.data["id"]))
        if record is not None:
            for scenario, count in dict(msg.data.get("by_scenario") or {}).items():
                record.pending += int(count)
                record.pending_by_scenario[scenario] = record.pending_by_scenario.get(scenario, 0) + int(count)
            for scenario, count in dict(msg.data.get("held") or {}).items():
                record.in_state_by_scenario[scenario] = record.in_state_by_scenario.get(scenario, 0) + int(count)
            due = self._due.get(record.id)
            if due is not None:
                self._due[record.id] = (due[0] - 1, due[1])

    def worker_report(self, totals: RunTotals, client_id: str, data: dict[str, Any]) -> None:
        """A worker's stats report: its counts since the last one, and its handshakes in flight."""
        report = data.get(REPORT_KEY)
        if report is None:
            return
        totals.add_client(ClientDelta.from_dict(report))
        self._pending_by_worker[client_id] = int(report.get("pending", 0))


class WorkerSide:
    """A Locust worker's part: answer the master's signals, hand over counts with each report."""

    def __init__(self, runner: Any, ledger: HandshakeLedger, recorder: ClientRecorder) -> None:
        self.ledger = ledger
        self.recorder = recorder
        runner.register_message(TERM_MESSAGE, self._on_signal)

    def _on_signal(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        data = msg.data
        peers = frozenset((str(host), int(port)) for host, port in data["peers"])
        caught = self.ledger.mark(int(data["id"]), peers, float(data["time"]))
        self.recorder.caught_late(caught.late)
        answer = {
            "id": data["id"],
            "pending": sum(caught.pending.values()),
            "by_scenario": dict(caught.pending),
            "held": dict(caught.held),
        }
        environment.runner.send_message(EXPOSURE_MESSAGE, answer)

    def report(self, data: dict[str, Any]) -> None:
        data[REPORT_KEY] = {**self.recorder.take().to_dict(), "pending": len(self.ledger)}
