"""The report files and tables, from typed results."""

from __future__ import annotations

from chaos.report.files import compress_logs, markdown_report
from chaos.report.matrix_tables import html_page, markdown, terminal
from chaos.report.page import soak_page
from chaos.report.text import format_summary
from tests.helpers import ROOT, SIGNATURE_596, matrix_result, run_summary


def test_markdown_report_shows_the_gate_errors_signals_and_outcomes():
    text = markdown_report(run_summary())
    assert "**Gate: fail** (exit 1)" in text
    row = f"| server | hold-accept | `{SIGNATURE_596}` | 9 | LocalProtocolError: Event \\| CloseConnection |"
    assert row + " uvicorn #596 |" in text
    assert "- sent: 2, landed on a worker holding pending handshakes: 1" in text
    assert "| 1 | 4599 | 12 | 0.20 | 0.40 | crash |" in text
    assert "| http_500 | 9 |" in text and "| gunicorn | 20.1.0 |" in text


def test_every_report_says_what_each_scenario_did_and_why_one_was_skipped():
    summary = run_summary()
    summary.scenarios = ["hold-accept", "deny-stream"]
    summary.skipped_scenarios = {"tls-handshake": "needs --tls"}
    summary.outcomes_by_scenario = {"hold-accept": {"http_500": 9}, "deny-stream": {"http_403": 4}}
    summary.signals.landed_by_scenario = {"hold-accept": 1}
    summary.errors[0].scenario = "mixed"
    markdown, text, page = markdown_report(summary), format_summary(summary), soak_page(summary)
    assert "| deny-stream | 0 | http_403 4 |" in markdown and "| tls-handshake | skipped | needs --tls |" in markdown
    assert "| server | mixed |" in markdown
    assert (
        "deny-stream     caught by   0 signals; http_403 4" in text and "tls-handshake   skipped: needs --tls" in text
    )
    assert "scenario 'mixed': the worker held handshakes of several scenarios" in text
    assert "<td>deny-stream</td><td class='n'>0</td><td>http_403 4</td>" in page and "<td>mixed</td>" in page


def test_terminal_summary():
    text = format_summary(run_summary())
    assert "signals sent: 2 (dry-run: 0), landed with pending handshakes: 1" in text
    assert "pending handshakes at each signal: [12, 0]" in text
    assert "signalled workers exited: crash 1, signalled 1" in text
    assert "see uvicorn #596" in text and "gate: fail (exit 1)" in text


def test_matrix_tables_agree():
    result = matrix_result()
    for text in (terminal(result), markdown(result), html_page(result)):
        assert f"{SIGNATURE_596} 9" in text and "handshake_dropped 2" in text and "2/3" in text
        assert "fail (expected)" in text and "0.19.0 has no websockets-sansio" in text
    assert "mean 6.0, max 12" in markdown(result)
    assert "<table>" in html_page(result) and "<script" not in html_page(result)


def test_the_server_logs_are_kept_whole_and_compressed(tmp_path):
    """A failing release's error log, as a long soak leaves it: thousands of #596 tracebacks from ever new
    workers. Kept byte for byte, at a small fraction of its size."""
    import gzip
    import random
    import re

    recorded = (ROOT / "tests" / "data" / "uvicorn-0.19.0-wsproto-term.log").read_text()
    rng = random.Random(596)
    parts, size = [], 0
    while size < 20_000_000:
        pid, second = rng.randint(1000, 4_000_000), rng.randint(0, 3599)
        part = re.sub(r"\[\d+\]", f"[{pid}]", recorded)
        part = part.replace("01:29:03", f"{1 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}")
        parts.append(part)
        size += len(part)
    server = tmp_path / "server"
    (server / "ready").mkdir(parents=True)
    log = server / "gunicorn-error.log"
    log.write_text("".join(parts))
    (server / "gunicorn-output.log").write_text("")
    original = log.read_bytes()
    kept = compress_logs(server)
    assert kept == [server / "gunicorn-error.log.gz", server / "gunicorn-output.log.gz"]
    assert sorted(path.name for path in server.iterdir()) == [
        "gunicorn-error.log.gz",
        "gunicorn-output.log.gz",
        "ready",
    ]
    assert gzip.decompress(kept[0].read_bytes()) == original
    assert kept[0].stat().st_size < len(original) / 40, kept[0].stat().st_size
    assert gzip.decompress(kept[1].read_bytes()) == b""
