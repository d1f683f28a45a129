"""The end-of-run summary as text for a terminal."""

from __future__ import annotations

from collections import Counter

from chaos.results import MIXED, ErrorRow, RunSummary, SignalRecord


def error_table(errors: list[ErrorRow]) -> list[str]:
    if not errors:
        return ["    (none)"]
    width = max(len(row.signature) for row in errors)
    states = max(len("scenario"), *(len(row.scenario) for row in errors))
    lines = [f"    {'side':<7} {'scenario':<{states}} {'signature':<{width}} {'count':>6}  example"]
    blank = f"    {'':<7} {'':<{states}} {'':<{width}} {'':>6}"
    for row in errors:
        example = (row.example or "")[:100]
        lines.append(f"    {row.side:<7} {row.scenario:<{states}} {row.signature:<{width}} {row.count:>6}  {example}")
        if row.reference:
            lines.append(f"{blank}  see {row.reference}")
        regression = row.regression_line()
        if regression:
            lines.append(f"{blank}  REGRESSION: {regression}")
    return lines


def scenario_lines(summary: RunSummary) -> list[str]:
    """Each scenario run: the signals that caught it pending, and its outcomes; then those skipped, and why."""
    lines: list[str] = []
    landed = summary.signals.landed_by_scenario
    for name in summary.scenarios:
        outcomes = ", ".join(f"{o} {n}" for o, n in summary.outcomes_by_scenario.get(name, {}).items()) or "none"
        lines.append(f"    {name:<15} caught by {landed.get(name, 0):>3} signals; {outcomes}")
    for name, why in summary.skipped_scenarios.items():
        lines.append(f"    {name:<15} skipped: {why}")
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
    lines += _exposure_lines(signals.records)
    replacement = [r.replacement_seconds for r in signals.records if r.replacement_seconds is not None]
    if replacement:
        lines.append(
            f"  worker replacement seconds: min {min(replacement):.2f}, max {max(replacement):.2f}, "
            f"mean {sum(replacement) / len(replacement):.2f}"
        )
    if summary.worker_exits:
        exits = ", ".join(f"{kind} {count}" for kind, count in summary.worker_exits.items())
        lines.append(f"  signalled workers exited: {exits}")
    if summary.scenarios or summary.skipped_scenarios:
        lines.append("  scenarios (the state each handshake was held in):")
        lines.extend(scenario_lines(summary))
    lines.append("  outcomes:")
    for name, count in summary.outcomes.items():
        lines.append(f"    {name:<22} {count}")
    if not summary.outcomes:
        lines.append("    (no handshake attempted)")
    lines.append("  handshake-time shutdown errors:")
    lines.extend(error_table(summary.errors))
    if any(row.scenario == MIXED for row in summary.errors):
        lines.append(
            f"  scenario {MIXED!r}: the worker held handshakes of several scenarios when its signal landed, and its "
            "log cannot say which one an error came from"
        )
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


def _exposure_lines(records: list[SignalRecord]) -> list[str]:
    """How each signal's exposure was measured, when the probe's own count took part, and the cross-check
    where both ways counted."""
    ways = Counter(record.exposure_measured_by for record in records if record.exposure_measured_by)
    if not ways.get("worker") and not ways.get("both"):
        return []
    lines = ["  exposure measured by: " + ", ".join(f"{way} {count}" for way, count in sorted(ways.items()))]
    both = [record for record in records if record.exposure_measured_by == "both"]
    if both:
        sockets, worker = sum(record.pending for record in both), sum(record.worker_pending or 0 for record in both)
        lines.append(f"  cross-check on {len(both)} signals: sockets matched {sockets}, the workers counted {worker}")
    if ways.get("worker"):
        lines.append(
            "  (worker: matching the clients' connections found none, as behind a NAT or a container's port "
            "mapping; the probe's own count stood in)"
        )
    return lines
