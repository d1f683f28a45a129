"""The gate's verdicts and exit codes."""

from __future__ import annotations

import pytest

from chaos.errors import UsageError
from chaos.results import ErrorRow, SignalRecord
from chaos.run.gate import EvidencePolicy, GatePolicy, decide, settled
from tests.helpers import signal_record

_596 = "uvicorn_596_wsproto_close_during_handshake"


def _rows(**counts: int) -> list[ErrorRow]:
    return [ErrorRow("server", signature, count, "example") for signature, count in counts.items()]


def test_errors_fail_with_exit_1_and_name_the_signatures():
    result = decide(_rows(**{_596: 3, "worker_crash_during_shutdown": 1}), 5, GatePolicy())
    assert (result.verdict, result.exit_code) == ("fail", 1)
    assert result.failing == sorted([_596, "worker_crash_during_shutdown"]) and "4 handshake-time" in result.reason


def test_no_signal_with_pending_handshakes_is_inconclusive_even_without_errors():
    result = decide([], 0, GatePolicy())
    assert (result.verdict, result.exit_code) == ("inconclusive", 3)


def test_errors_decide_before_inconclusive():
    assert decide(_rows(**{_596: 1}), 0, GatePolicy()).verdict == "fail"


def test_pass_needs_a_signal_that_landed():
    result = decide([], 2, GatePolicy())
    assert (result.verdict, result.exit_code, result.failing) == ("pass", 0, [])


def test_allowances_tolerate_up_to_n_per_signature():
    policy = GatePolicy.parse([f"{_596}=3"])
    assert decide(_rows(**{_596: 3}), 1, policy).verdict == "pass"
    assert decide(_rows(**{_596: 4}), 1, policy).verdict == "fail"
    client_and_server = [ErrorRow("client", _596, 2, ""), ErrorRow("server", _596, 2, "")]
    assert decide(client_and_server, 1, policy).verdict == "fail"  # counted across sides


@pytest.mark.parametrize("bad", ["x", "x=", "=3", "x=-1", "x=two"])
def test_bad_allowances(bad):
    with pytest.raises(UsageError, match="SIGNATURE=COUNT"):
        GatePolicy.parse([bad])


def _record(number: int, pending: int, settled: bool = True, dry_run: bool = False) -> SignalRecord:
    return signal_record(number, pending=pending, dry_run=dry_run, settled=settled)


_EVIDENCE = EvidencePolicy(signals=3, pending=10)
_596_ROW = ErrorRow("server", _596, 4, "LocalProtocolError: ...")


def test_a_fail_settles_once_the_signals_before_its_last_error_have():
    assert settled([_596_ROW], [_record(1, 12, settled=False)], GatePolicy(), _EVIDENCE, last_error_time=1.5) is None
    # A later signal's open window does not hold a fail back: the controller keeps its rate.
    later_open = [_record(1, 12), _record(2, 3, settled=False)]
    reason = settled([_596_ROW], later_open, GatePolicy(), _EVIDENCE, last_error_time=1.5)
    assert reason is not None and reason.startswith("verdict settled: fail")
    # An error counted after the second signal was sent: that one may have found it too.
    assert settled([_596_ROW], later_open, GatePolicy(), _EVIDENCE, last_error_time=2.5) is None


def test_a_pass_needs_enough_strong_signals_settled():
    strong = [_record(n, 10) for n in range(1, 4)]
    weak = [_record(n, 9) for n in range(4, 9)]
    assert settled([], weak, GatePolicy(), _EVIDENCE) is None  # many signals, none caught enough
    assert settled([], strong[:2] + weak, GatePolicy(), _EVIDENCE) is None
    assert settled([], [*strong[:2], _record(3, 50, settled=False)], GatePolicy(), _EVIDENCE) is None
    assert settled([], [*strong[:2], _record(3, 50, dry_run=True)], GatePolicy(), _EVIDENCE) is None
    reason = settled([], [*strong, _record(9, 0, settled=False)], GatePolicy(), _EVIDENCE)
    assert reason is not None and reason.startswith("verdict settled: pass")


def test_errors_within_the_allowances_do_not_settle_a_fail_and_do_not_block_a_pass():
    allowed = GatePolicy.parse([f"{_596}=4"])
    strong = [_record(n, 10) for n in range(1, 4)]
    reason = settled([_596_ROW], strong, allowed, _EVIDENCE)
    assert reason is not None and "pass" in reason


def test_only_the_test_under_way_counts():
    """A new Start in the web UI is not stopped by what the test before it settled."""
    earlier = [_record(n, 10) for n in range(1, 4)]  # times 1.0, 2.0, 3.0
    assert settled([], earlier, GatePolicy(), _EVIDENCE, since=3.5) is None
    assert settled([_596_ROW], earlier, GatePolicy(), _EVIDENCE, last_error_time=2.5, since=3.5) is None
    assert settled([], earlier, GatePolicy(), _EVIDENCE, since=1.0) is not None


def test_a_pass_needs_every_scenario_caught_or_it_is_inconclusive():
    passed = decide([], 3, GatePolicy(), uncaught=[])
    assert passed.verdict == "pass"
    missing = decide([], 3, GatePolicy(), uncaught=["deny-stream", "accept-send"])
    assert missing.verdict == "inconclusive" and missing.exit_code == 3
    assert "no signal caught a pending handshake of accept-send, deny-stream" in missing.reason
    # Errors fail whatever was caught.
    assert decide(_rows(**{_596: 1}), 3, GatePolicy(), uncaught=["deny-stream"]).verdict == "fail"


def test_mixed_scenarios_settle_a_pass_only_on_evidence_for_each():
    def record(number: int, **by_scenario: int) -> SignalRecord:
        return signal_record(
            number, pending=sum(by_scenario.values()), settled=True, pending_by_scenario=dict(by_scenario)
        )

    scenarios = ("hold-accept", "deny-stream")
    one_sided = [record(n, **{"hold-accept": 12}) for n in range(1, 5)]
    assert settled([], one_sided, GatePolicy(), _EVIDENCE, scenarios=scenarios) is None
    both = [record(n, **{"hold-accept": 6, "deny-stream": 5}) for n in range(1, 4)]
    reason = settled([], both, GatePolicy(), _EVIDENCE, scenarios=scenarios)
    assert reason is not None and "for each of 2 scenarios, 3 signals caught at least 5" in reason
