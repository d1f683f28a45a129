"""The end-of-run summary as text for a terminal."""

from __future__ import annotations

from chaos.results import ErrorRow, RunSummary


def error_table(errors: list[ErrorRow]) -> list[str]:
    if not errors:
        return ["    (none)"]
    width = max(len(row.signature) for row in errors)
    lines = [f"    {'side':<7} {'signature':<{width}} {'count':>6}  example"]
    for row in errors:
        lines.append(f"    {row.side:<7} {row.signature:<{width}} {row.count:>6}  {(row.example or '')[:100]}")
        if row.reference:
            lines.append(f"    {'':<7} {'':<{width}} {'':>6}  see {row.reference}")
        regression = row.regression_line()
        if regression:
            lines.append(f"    {'':<7} {'':<{width}} {'':>6}  REGRESSION: {regression}")
    return lines


def format_summary(summary: RunSummary) -> str:
    signals = summary.signals
    versions = summary.versions
    lines = ["", "handshake-chaos summary"]
    lines.append(
        f"  release {summary.release} (uvicorn {versions.get('uvicorn')}, gunicorn {versions.get('gunicorn')}, "
        f"ws {summary.ws}, python {versions.get('python')}), mode {summary.mode}, server {summary.server}"
    )
    lines.append(
        f"  signals sent: {signals.sent} (dry-run: {signals.dry_run}), "
        f"landed with pending handshakes: {signals.landed_with_pending}"
    )
    lines.append(f"  pending handshakes at each signal: {signals.pending_at_term or 'none'}")
    replacement = [r.replacement_seconds for r in signals.records if r.replacement_seconds is not None]
    if replacement:
        lines.append(
            f"  worker replacement seconds: min {min(replacement):.2f}, max {max(replacement):.2f}, "
            f"mean {sum(replacement) / len(replacement):.2f}"
        )
    if summary.worker_exits:
        exits = ", ".join(f"{kind} {count}" for kind, count in summary.worker_exits.items())
        lines.append(f"  signalled workers exited: {exits}")
    lines.append("  outcomes:")
    for name, count in summary.outcomes.items():
        lines.append(f"    {name:<22} {count}")
    if not summary.outcomes:
        lines.append("    (no handshake attempted)")
    lines.append("  handshake-time shutdown errors:")
    lines.extend(error_table(summary.errors))
    if summary.ambiguous_server_errors:
        lines.append(
            f"  {summary.ambiguous_server_errors} server errors were logged without a pid while several workers "
            "shut down at once: each was attributed to the latest (ambiguous)"
        )
    if summary.stop_reason:
        lines.append(f"  stopped: {summary.stop_reason}")
    gate = summary.gate
    lines.append(f"  gate: {gate.verdict} (exit {gate.exit_code}): {gate.reason}")
    return "\n".join(lines)
