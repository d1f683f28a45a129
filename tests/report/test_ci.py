"""JUnit XML and the step summary, from typed results: valid for the JUnit XSD, read by a JUnit consumer,
and saying what the gate says."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.report.ci import append_step_summary, error_suite, matrix_suite, soak_suite, write_junit
from chaos.results import ErrorRow, GateResult, MatrixCell
from chaos.run.gate import GatePolicy, decide
from tests.helpers import SIGNATURE_596, junit_cases, matrix_result, read_junit, run_summary

ERRORS = "errors: no handshake-time shutdown error"
EXPOSURE = "exposure: signals landed on workers holding pending handshakes"
RUN = "run: ran to its end"


def test_a_failing_soak_is_one_failing_case_with_signatures_counts_examples_and_references(tmp_path):
    summary = run_summary()
    summary.scenarios = ["hold-accept"]
    write_junit(soak_suite(summary, {}), tmp_path / "junit.xml")
    suite = read_junit(tmp_path / "junit.xml")
    cases = junit_cases(suite)
    assert list(cases) == [ERRORS, EXPOSURE, "exposure: scenario hold-accept", RUN]
    kind, message, text = cases[ERRORS]
    assert kind == "failure" and message == f"9 handshake-time shutdown errors: {SIGNATURE_596}"
    assert f"server {SIGNATURE_596}: 9 in scenario hold-accept" in text
    assert "example: LocalProtocolError: Event | CloseConnection" in text and "reference: uvicorn #596" in text
    assert cases[EXPOSURE][0] is None and "landed with pending handshakes 1" in cases[EXPOSURE][2]
    assert cases[RUN][0] is None
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (4, 1, 0, 0)
    properties = {prop.name: prop.value for prop in suite.properties()}
    assert (
        properties["verdict"] == "fail" and properties["exit_code"] == "1" and properties["version.uvicorn"] == "0.19.0"
    )


def test_allowances_are_cases_of_their_own(tmp_path):
    summary = run_summary()
    write_junit(soak_suite(summary, {SIGNATURE_596: 20, "handshake_dropped": 0}), tmp_path / "within.xml")
    cases = junit_cases(read_junit(tmp_path / "within.xml"))
    assert cases[ERRORS][0] is None and "9 allowed errors" in cases[ERRORS][2]
    assert cases[f"allowance: {SIGNATURE_596} at most 20"][0] is None
    assert "9 of 20 allowed" in cases[f"allowance: {SIGNATURE_596} at most 20"][2]
    assert cases["allowance: handshake_dropped at most 0"][0] is None
    write_junit(soak_suite(summary, {SIGNATURE_596: 3}), tmp_path / "beyond.xml")
    kind, message, text = junit_cases(read_junit(tmp_path / "beyond.xml"))[f"allowance: {SIGNATURE_596} at most 3"]
    assert kind == "failure" and message == f"{SIGNATURE_596}: 9 errors, 3 allowed" and "(--allow 3)" in text


def test_exposure_per_scenario_and_the_scenarios_skipped(tmp_path):
    summary = run_summary()
    summary.errors = []
    summary.gate = GateResult("inconclusive", 3, "no signal caught a pending handshake of deny-stream")
    summary.scenarios = ["hold-accept", "deny-stream"]
    summary.skipped_scenarios = {"tls-handshake": "needs --tls"}
    summary.signals.landed_by_scenario = {"hold-accept": 1}
    summary.outcomes_by_scenario = {"deny-stream": {"http_403": 4}}
    write_junit(soak_suite(summary, {}), tmp_path / "junit.xml")
    suite = read_junit(tmp_path / "junit.xml")
    cases = junit_cases(suite)
    assert cases["exposure: scenario hold-accept"][0] is None
    kind, message, text = cases["exposure: scenario deny-stream"]
    assert kind == "failure" and message == "no signal caught a pending handshake of deny-stream"
    assert "outcomes: http_403 4" in text
    assert cases["exposure: scenario tls-handshake"][:2] == ("skipped", "needs --tls")
    assert suite.skipped == 1


def test_a_run_that_proves_nothing_or_was_stopped(tmp_path):
    summary = run_summary()
    summary.errors = []
    summary.signals = dataclasses.replace(summary.signals, landed_with_pending=0, pending_at_term=[0, 0])
    summary.gate = GateResult("interrupted", 143, "stopped by SIGTERM before the run's end; no error found so far")
    summary.stop_reason = "interrupted by SIGTERM"
    write_junit(soak_suite(summary, {}), tmp_path / "junit.xml")
    cases = junit_cases(read_junit(tmp_path / "junit.xml"))
    assert cases[EXPOSURE][0] == "failure" and "proves nothing" in cases[EXPOSURE][1]
    assert cases[RUN][:2] == ("error", "interrupted by SIGTERM")


def test_what_a_server_logs_stays_valid_xml(tmp_path):
    summary = run_summary()
    summary.errors[0].example = "bytes \x00\x1b[31m <tag> & \ufffe in a log line"
    write_junit(soak_suite(summary, {}), tmp_path / "junit.xml")
    text = junit_cases(read_junit(tmp_path / "junit.xml"))[ERRORS][2]
    assert "<tag> & " in text and "\x00" not in text


def test_a_matrix_is_one_case_per_cell_and_a_cell_not_run_is_skipped(tmp_path):
    result = matrix_result()
    failing = MatrixCell.from_json({**result.cells[0].to_json(), "expected_fail": False})
    failing.new_signatures = [SIGNATURE_596]
    failing.uvicorn = failing.release = "0.19.1"
    result.cells.append(failing)
    write_junit(matrix_suite(result), tmp_path / "junit.xml")
    suite = read_junit(tmp_path / "junit.xml")
    cases = junit_cases(suite)
    assert list(cases) == [
        "0.19.0 wsproto worker-term",
        "0.19.0 websockets-sansio worker-term",
        "0.19.1 wsproto worker-term",
    ]
    expected = cases["0.19.0 wsproto worker-term"]
    assert expected[0] is None and expected[2].startswith("expected failure: fail")
    assert cases["0.19.0 websockets-sansio worker-term"][:2] == ("skipped", "0.19.0 has no websockets-sansio")
    kind, message, text = cases["0.19.1 wsproto worker-term"]
    assert kind == "failure" and f"(new: {SIGNATURE_596})" in message
    assert f"server {SIGNATURE_596}: 9" in text and "client handshake_dropped: 2" in text
    assert (suite.tests, suite.failures, suite.skipped) == (3, 1, 1)


def test_a_command_that_could_not_run_is_an_error_case(tmp_path):
    write_junit(error_suite("soak", "uvicorn 99.0.0 is not on the package index", 4), tmp_path / "junit.xml")
    suite = read_junit(tmp_path / "junit.xml")
    assert junit_cases(suite)[RUN][:2] == ("error", "uvicorn 99.0.0 is not on the package index")
    assert suite.errors == 1


def test_the_step_summary_is_appended_to_only_when_the_runner_set_one(tmp_path):
    target = tmp_path / "step-summary.md"
    target.write_text("earlier step\n")
    assert append_step_summary("# soak", {}) is None
    assert append_step_summary("# soak", {"GITHUB_STEP_SUMMARY": str(target)}) == target
    append_step_summary("# matrix\n", {"GITHUB_STEP_SUMMARY": str(target)})
    assert target.read_text() == "earlier step\n# soak\n# matrix\n"


_SIGNATURES = st.sampled_from([SIGNATURE_596, "handshake_dropped", "worker_crash_during_shutdown"])
_ROWS = st.lists(
    st.builds(
        ErrorRow,
        side=st.sampled_from(["server", "client"]),
        signature=_SIGNATURES,
        count=st.integers(0, 5),
        example=st.text(max_size=20),
        scenario=st.sampled_from(["hold-accept", "deny-close", "mixed"]),
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    rows=_ROWS,
    allow=st.dictionaries(_SIGNATURES, st.integers(0, 6), max_size=2),
    landed=st.dictionaries(st.sampled_from(["hold-accept", "deny-close"]), st.integers(0, 3)),
    two_scenarios=st.booleans(),
)
def test_the_cases_fail_exactly_when_the_gate_does_not_pass(rows, allow, landed, two_scenarios):
    scenarios = ["hold-accept", "deny-close"] if two_scenarios else ["hold-accept"]
    summary = run_summary()
    summary.errors = rows
    summary.scenarios = scenarios
    landed_with_pending = max(landed.values(), default=0)
    summary.signals = dataclasses.replace(
        summary.signals, landed_with_pending=landed_with_pending, landed_by_scenario=landed
    )
    uncaught = [name for name in scenarios if not landed.get(name)] if two_scenarios else []
    summary.gate = decide(rows, landed_with_pending, GatePolicy(allow), uncaught=uncaught)
    suite = soak_suite(summary, allow)
    failed = [case.name for case in suite.cases if case.outcome in ("failure", "error")]
    assert bool(failed) == (summary.gate.verdict != "pass"), (failed, summary.gate)
    failing_signatures = {
        name.split(": ", 1)[1].split(" at most")[0] for name in failed if name.startswith("allowance")
    } | ({row.signature for row in rows if row.signature not in allow and row.count} if ERRORS in failed else set())
    assert failing_signatures == set(summary.gate.failing)
