"""Report files of a soak: ``report.md`` beside ``summary.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _exposure(pending: list[int]) -> str:
    if not pending:
        return "none"
    return f"min {min(pending)}, mean {sum(pending) / len(pending):.1f}, max {max(pending)}"


def markdown_report(summary: dict[str, Any]) -> str:
    versions = summary.get("versions", {})
    gate = summary["gate"]
    signals = summary["signals"]
    lines = [
        f"# handshake-chaos soak: {summary['release']} ({summary['ws']})",
        "",
        f"**Gate: {gate['verdict']}** (exit {gate['exit_code']}): {gate.get('reason', '')}",
        "",
        "| component | version |",
        "|---|---|",
    ]
    for key in ("uvicorn", "gunicorn", "uvicorn_worker", "websockets", "wsproto", "h11", "python", "handshake_chaos"):
        if versions.get(key):
            lines.append(f"| {key} | {versions[key]} |")
    lines += [
        "",
        "## Handshake-time shutdown errors",
        "",
        "| side | signature | count | example | reference |",
        "|---|---|---:|---|---|",
    ]
    for row in summary["errors"]:
        example = (row.get("example") or "").replace("|", "\\|")[:160]
        lines.append(
            f"| {row['side']} | `{row['signature']}` | {row['count']} | {example} | {row.get('reference') or ''} |"
        )
    if not summary["errors"]:
        lines.append("| | none | 0 | | |")
    lines += [
        "",
        "## Signals",
        "",
        f"- sent: {signals['sent']}, landed on a worker holding pending handshakes: {signals['landed_with_pending']}",
        f"- pending handshakes at each TERM: {_exposure(signals['pending_at_term'])}",
        "",
        "| # | worker | pending | worker exited after (s) | replacement ready after (s) | exit |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for record in signals.get("records", []):
        exited = record.get("worker_exit_seconds")
        ready = record.get("replacement_seconds")
        lines.append(
            f"| {record['id']} | {record['worker_pid']} | {record['pending']} | "
            f"{'' if exited is None else f'{exited:.2f}'} | {'' if ready is None else f'{ready:.2f}'} | "
            f"{record.get('exit_kind') or ''} |"
        )
    lines += ["", "## Outcomes", "", "| outcome | count |", "|---|---:|"]
    for outcome, count in summary["outcomes"].items():
        lines.append(f"| {outcome} | {count} |")
    return "\n".join(lines) + "\n"


def write_markdown_report(summary: dict[str, Any], path: Path) -> None:
    path.write_text(markdown_report(summary))
