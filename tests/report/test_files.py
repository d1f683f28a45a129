"""The report files and tables, from typed results."""

from __future__ import annotations

from chaos.report.files import markdown_report
from chaos.report.matrix_tables import html_page, markdown, terminal
from chaos.report.text import format_summary
from chaos.results import (
    CellSignals,
    ErrorRow,
    Exposure,
    GateResult,
    MatrixCell,
    MatrixResult,
    RunSummary,
    SignalsSummary,
)
from tests.helpers import signal_record

_596 = "uvicorn_596_wsproto_close_during_handshake"


def _summary() -> RunSummary:
    records = [
        signal_record(
            1,
            time=0.0,
            worker_pid=4599,
            role="worker",
            signal="TERM",
            pending=12,
            dry_run=False,
            worker_exit_seconds=0.2,
            replacement_pid=4601,
            replacement_seconds=0.4,
            exit_kind="crash",
            settled=True,
        ),
        signal_record(
            2,
            time=3.0,
            worker_pid=4601,
            role="worker",
            signal="TERM",
            pending=0,
            dry_run=False,
            worker_exit_seconds=0.1,
            replacement_pid=4610,
            replacement_seconds=0.3,
            exit_kind="signalled",
            settled=True,
        ),
    ]
    return RunSummary(
        release="0.19.0",
        ws="wsproto",
        mode="worker-term",
        versions={"uvicorn": "0.19.0", "gunicorn": "20.1.0", "python": "3.11.7"},
        gate=GateResult("fail", 1, f"9 handshake-time shutdown errors: {_596}", [_596]),
        errors=[ErrorRow("server", _596, 9, "LocalProtocolError: Event | CloseConnection", "uvicorn #596")],
        signals=SignalsSummary.of(records),
        outcomes={"accepted": 40, "http_500": 9},
        worker_exits={"crash": 1, "signalled": 1},
    )


def test_markdown_report_shows_the_gate_errors_signals_and_outcomes():
    text = markdown_report(_summary())
    assert "**Gate: fail** (exit 1)" in text
    assert f"| server | `{_596}` | 9 | LocalProtocolError: Event \\| CloseConnection | uvicorn #596 |" in text
    assert "- sent: 2, landed on a worker holding pending handshakes: 1" in text
    assert "| 1 | 4599 | 12 | 0.20 | 0.40 | crash |" in text
    assert "| http_500 | 9 |" in text and "| gunicorn | 20.1.0 |" in text


def test_terminal_summary():
    text = format_summary(_summary())
    assert "signals sent: 2 (dry-run: 0), landed with pending handshakes: 1" in text
    assert "pending handshakes at each signal: [12, 0]" in text
    assert "signalled workers exited: crash 1, signalled 1" in text
    assert "see uvicorn #596" in text and "gate: fail (exit 1)" in text


def _matrix() -> MatrixResult:
    ran = MatrixCell(
        uvicorn="0.19.0",
        ws="wsproto",
        status="ran",
        reason="",
        release="0.19.0",
        verdict="fail",
        exit_code=1,
        errors={f"server:{_596}": 9, "client:handshake_dropped": 2},
        signals=CellSignals(sent=3, landed_with_pending=2),
        exposure=Exposure.of([12, 0, 6]),
        outcomes={"accepted": 40},
        expected_fail=True,
    )
    skipped = MatrixCell.not_run("0.19.0", "websockets-sansio", "skipped", "0.19.0 has no websockets-sansio")
    return MatrixResult([ran, skipped], 61.0, 30.0, 100, None, ["0.19.0:wsproto"], 0)


def test_matrix_tables_agree():
    result = _matrix()
    for text in (terminal(result), markdown(result), html_page(result)):
        assert f"{_596} 9" in text and "handshake_dropped 2" in text and "2/3" in text
        assert "fail (expected)" in text and "0.19.0 has no websockets-sansio" in text
    assert "mean 6.0, max 12" in markdown(result)
    assert "<table>" in html_page(result) and "<script" not in html_page(result)
