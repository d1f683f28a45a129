"""The gate's verdicts and exit codes."""

from __future__ import annotations

import pytest

from chaos.errors import UsageError
from chaos.results import ErrorRow
from chaos.run.gate import GatePolicy, decide

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
