"""Report files of a soak: ``report.md`` beside ``summary.json``, and the server's logs kept compressed."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from chaos.results import RunSummary

_VERSION_KEYS = ("uvicorn", "gunicorn", "uvicorn_worker", "websockets", "wsproto", "h11", "python", "handshake_chaos")


def _exposure(pending: list[int]) -> str:
    if not pending:
        return "none"
    return f"min {min(pending)}, mean {sum(pending) / len(pending):.1f}, max {max(pending)}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown_report(summary: RunSummary) -> str:
    gate = summary.gate
    signals = summary.signals
    lines = [
        f"# handshake-chaos soak: {summary.release} ({summary.ws}, {summary.mode})",
        "",
        f"**Gate: {gate.verdict}** (exit {gate.exit_code}): {gate.reason}",
        "",
        *([f"Stopped: {summary.stop_reason}.", ""] if summary.stop_reason else []),
        "| component | version |",
        "|---|---|",
    ]
    lines += [f"| {key} | {summary.versions[key]} |" for key in _VERSION_KEYS if summary.versions.get(key)]
    lines += [
        "",
        "## Handshake-time shutdown errors",
        "",
        "| side | scenario | signature | count | example | reference |",
        "|---|---|---|---:|---|---|",
    ]
    for row in summary.errors:
        example = (row.example or "").replace("|", "\\|")[:160]
        regression = f" **{row.regression_line()}**" if row.regression_fixed_in else ""
        lines.append(
            f"| {row.side} | {row.scenario} | `{row.signature}` | {row.count} | {example} | "
            f"{row.reference or ''}{regression} |"
        )
    if not summary.errors:
        lines.append("| | | none | 0 | | |")
    lines += _scenario_section(summary)
    lines += [
        "",
        "## Signals",
        "",
        f"- sent: {signals.sent}, landed on a worker holding pending handshakes: {signals.landed_with_pending}",
        f"- pending handshakes at each TERM: {_exposure(signals.pending_at_term)}",
        "",
        "| # | worker | pending | worker exited after (s) | replacement ready after (s) | exit |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for record in signals.records:
        lines.append(
            f"| {record.id} | {record.worker_pid} | {record.pending} | {_seconds(record.worker_exit_seconds)} | "
            f"{_seconds(record.replacement_seconds)} | {record.exit_kind or ''} |"
        )
    lines += ["", "## Outcomes", "", "| outcome | count |", "|---|---:|"]
    lines += [f"| {outcome} | {count} |" for outcome, count in summary.outcomes.items()]
    return "\n".join(lines) + "\n"


def _scenario_section(summary: RunSummary) -> list[str]:
    if not summary.scenarios and not summary.skipped_scenarios:
        return []
    lines = ["", "## Scenarios", "", "| scenario | caught by signals | outcomes |", "|---|---:|---|"]
    landed = summary.signals.landed_by_scenario
    for name in summary.scenarios:
        outcomes = ", ".join(f"{o} {n}" for o, n in summary.outcomes_by_scenario.get(name, {}).items())
        lines.append(f"| {name} | {landed.get(name, 0)} | {outcomes} |")
    for name, why in summary.skipped_scenarios.items():
        lines.append(f"| {name} | skipped | {why} |")
    return lines


def write_markdown_report(summary: RunSummary, path: Path) -> None:
    path.write_text(markdown_report(summary))


def compress_logs(directory: Path) -> list[Path]:
    """Every ``*.log`` under ``directory`` replaced by its gzip, ``NAME.log.gz``: the whole log, byte for byte
    (``zcat``/``zless`` read it). A failing release's error log is tracebacks, thousands of near-identical
    ones, so it shrinks about a hundredfold: an hour of soak leaves megabytes, not hundreds of them."""
    kept = []
    for log in sorted(directory.rglob("*.log")):
        target = log.with_name(log.name + ".gz")
        partial = target.with_name(target.name + ".partial")
        with log.open("rb") as source, partial.open("wb") as raw:
            with gzip.GzipFile(filename=log.name, mode="wb", fileobj=raw, mtime=int(log.stat().st_mtime)) as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        partial.replace(target)
        log.unlink()
        kept.append(target)
    return kept
