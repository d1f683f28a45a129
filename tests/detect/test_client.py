"""Client-side judgement and the run's totals: every attempt counted once, caught ones judged."""

from __future__ import annotations

from collections import Counter

from chaos.detect.client import ClientDelta, ClientRecorder, WireJudgement, client_signature
from chaos.detect.server import DetectedError
from chaos.detect.totals import RunTotals
from chaos.load.client import HandshakeResult
from chaos.load.ledger import Flight

PLAIN = WireJudgement()
REJECTIONS = WireJudgement(http_rejection_is_error=True)
INCOMPLETE = WireJudgement(incomplete_is_error=True)


def _result(
    outcome: str, status: int | None = None, exposed_by: int | None = None, scenario: str = "hold-accept"
) -> HandshakeResult:
    return HandshakeResult(outcome, 0.1, 0.0, status=status, detail="why", exposed_by=exposed_by, scenario=scenario)


def test_only_answers_that_are_not_http_are_client_errors():
    assert client_signature(_result("dropped"), PLAIN) == "handshake_dropped"
    assert client_signature(_result("os_error_epipe"), PLAIN) == "handshake_os_error"
    assert client_signature(_result("http_500", 500), PLAIN) is None
    assert client_signature(_result("http_500", 500), REJECTIONS) == "handshake_http_500"
    assert client_signature(_result("accepted", 101), REJECTIONS) is None
    assert client_signature(_result("refused"), REJECTIONS) is None  # never reached a worker


def test_each_scenario_is_judged_by_what_a_clean_shutdown_may_do_in_its_state():
    # A request the server never had in full, or a TLS handshake it never finished: closing it is clean.
    for scenario in ("slow-request", "tls-handshake"):
        assert client_signature(_result("dropped", scenario=scenario), PLAIN) is None
        assert client_signature(_result("reset", scenario=scenario), PLAIN) is None
        assert (
            client_signature(_result("truncated_response", scenario=scenario), PLAIN) == "handshake_truncated_response"
        )
    assert client_signature(_result("tls_failed", scenario="tls-handshake"), PLAIN) is None
    # Incomplete answers: outcomes, errors when asked.
    cut_denial = _result("denial_truncated", 403, scenario="deny-stream")
    assert client_signature(cut_denial, PLAIN) is None
    assert client_signature(cut_denial, INCOMPLETE) == "handshake_denial_truncated"
    cut_frame = _result("frame_truncated", 101, scenario="accept-send")
    assert client_signature(cut_frame, INCOMPLETE) == "handshake_frame_truncated"
    assert client_signature(_result("lost_after_accept", 101), INCOMPLETE) == "handshake_lost_after_accept"
    # The app's own denial is never a shutdown's rejection; a 500 in its place is.
    assert client_signature(_result("http_403", 403, scenario="deny-close"), REJECTIONS) is None
    assert client_signature(_result("http_500", 500, scenario="deny-close"), REJECTIONS) == "handshake_http_500"
    assert client_signature(_result("dropped", scenario="deny-stream"), PLAIN) == "handshake_dropped"


def test_uncaught_handshakes_count_as_outcomes_only():
    totals = RunTotals()
    recorder = ClientRecorder(PLAIN, sink=totals.add_client)
    recorder.finished(_result("dropped"))
    recorder.finished(_result("dropped", exposed_by=3))
    assert totals.outcomes() == {"dropped": 2}
    [row] = totals.error_rows()
    assert (row.side, row.signature, row.count, row.example) == ("client", "handshake_dropped", 1, "dropped: why")


def test_handshakes_that_ended_before_their_signal_was_known_are_judged_late():
    totals = RunTotals()
    recorder = ClientRecorder(PLAIN, sink=totals.add_client)
    flight = Flight(started=0.0, exposed_by=4, ended=1.0, payload=_result("reset"))
    recorder.caught_late([flight, Flight(started=0.0, exposed_by=4, payload=None)])
    assert [(r.signature, r.count) for r in totals.error_rows()] == [("handshake_reset", 1)]
    assert totals.outcomes() == {}  # the attempt itself was counted when it finished


def test_a_worker_hands_over_its_counts_once():
    recorder = ClientRecorder(PLAIN)
    recorder.finished(_result("accepted", 101))
    recorder.finished(_result("timeout", exposed_by=1))
    delta = recorder.take()
    assert recorder.take().outcomes == {}
    again = ClientDelta.from_dict(delta.to_dict())
    assert again.outcomes == {("hold-accept", "accepted"): 1, ("hold-accept", "timeout"): 1}
    assert again.errors == {("hold-accept", "handshake_timeout"): 1}


def test_totals_order_server_first_then_by_count_and_keep_the_first_example():
    totals = RunTotals()
    totals.add_server(DetectedError("server", "a_sig", "first", "https://x/1"), "hold-accept")
    totals.add_server(DetectedError("server", "a_sig", "second", "https://x/1"), "hold-accept")
    totals.add_server(DetectedError("server", "b_sig", "only", None), "mixed")
    dropped = Counter({("hold-accept", "handshake_dropped"): 5})
    totals.add_client(ClientDelta(errors=dropped, examples={"handshake_dropped": "dropped"}))
    rows = totals.error_rows()
    assert [(r.side, r.signature, r.count) for r in rows] == [
        ("server", "a_sig", 2),
        ("server", "b_sig", 1),
        ("client", "handshake_dropped", 5),
    ]
    assert rows[0].example == "first" and rows[0].reference == "https://x/1"
