"""``report.html``: one soak as a page a person looks at. Self-contained: inline CSS and SVG, no script.

A timeline of the run: every signal a marker (its exposure as the marker's dot, its details in a
tooltip), pending handshakes over time, and each error signature's count over time; then the
gate's reasoning, the versions under test, the errors with their references, every signal.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from chaos.results import ErrorRow, RunSummary, SignalRecord, TimelinePoint

_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 960, 220, 56, 16, 14, 28
_PALETTE = ("#c0392b", "#8e44ad", "#d35400", "#16a085", "#2c3e50", "#b7950b", "#1f618d", "#6e2c00")
_VERDICT_COLORS = {"pass": "#1e8449", "fail": "#c0392b", "inconclusive": "#b7950b", "interrupted": "#5d6d7e"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


class _Axes:
    """Maps run seconds and a value range onto one chart's pixels."""

    def __init__(self, duration: float, top_value: float) -> None:
        self.duration = max(duration, 1.0)
        self.top_value = max(top_value, 1.0)

    def x(self, seconds: float) -> float:
        return _LEFT + (_WIDTH - _LEFT - _RIGHT) * min(max(seconds, 0.0), self.duration) / self.duration

    def y(self, value: float) -> float:
        return _TOP + (_HEIGHT - _TOP - _BOTTOM) * (1 - value / self.top_value)

    def frame(self, label: str) -> str:
        ticks = []
        for index in range(6):
            seconds = self.duration * index / 5
            ticks.append(
                f'<text x="{self.x(seconds):.1f}" y="{_HEIGHT - 8}" class="tick" text-anchor="middle">'
                f"{seconds:.0f}s</text>"
            )
        return (
            f'<line x1="{_LEFT}" y1="{self.y(0):.1f}" x2="{_WIDTH - _RIGHT}" y2="{self.y(0):.1f}" class="axis"/>'
            f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{self.y(0):.1f}" class="axis"/>'
            f'<text x="{_LEFT - 6}" y="{_TOP + 4}" class="tick" text-anchor="end">{self.top_value:.0f}</text>'
            f'<text x="{_LEFT - 6}" y="{self.y(0):.1f}" class="tick" text-anchor="end">0</text>'
            f'<text x="{_LEFT + 6}" y="{_TOP + 10}" class="label">{_e(label)}</text>' + "".join(ticks)
        )


def _polyline(axes: _Axes, points: Sequence[tuple[float, float]], color: str, css: str) -> str:
    path = " ".join(f"{axes.x(t):.1f},{axes.y(v):.1f}" for t, v in points)
    return f'<polyline points="{path}" fill="none" stroke="{color}" class="{css}"/>'


def _signal_markers(axes: _Axes, records: Sequence[SignalRecord], started: float, with_dots: bool) -> str:
    marks = []
    for record in records:
        if record.dry_run:
            continue
        x = axes.x(record.time - started)
        tip = (
            f"#{record.id} {record.signal} to {record.role} {record.worker_pid} at {record.time - started:.1f}s: "
            f"{record.pending} pending, exited {record.exit_kind or '?'}"
            + (f", replaced after {record.replacement_seconds:.2f}s" if record.replacement_seconds is not None else "")
        )
        dot = f'<circle cx="{x:.1f}" cy="{axes.y(record.pending):.1f}" r="4" class="exposure"/>' if with_dots else ""
        marks.append(
            f'<g class="signal-marker"><title>{_e(tip)}</title>'
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{axes.y(0):.1f}"/>{dot}</g>'
        )
    return "".join(marks)


def timeline_svg(summary: RunSummary) -> str:
    """Two charts on one time axis: pending handshakes with the signals, then errors by signature."""
    points: list[TimelinePoint] = summary.timeline
    started = summary.started or (points[0].t if points else 0.0)
    records = summary.signals.records
    duration = max([p.t for p in points] + [r.time - started for r in records] + [summary.duration_seconds, 1.0])
    top_pending = max([p.pending for p in points] + [r.pending for r in records] + [1])
    pending_axes = _Axes(duration, top_pending)
    pending = (
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="pending handshakes and signals">'
        + pending_axes.frame("pending handshakes; signals (dot: pending at that signal)")
        + _polyline(pending_axes, [(p.t, p.pending) for p in points], "#1f618d", "pending")
        + _signal_markers(pending_axes, records, started, with_dots=True)
        + "</svg>"
    )
    keys = sorted({key for p in points for key in p.errors})
    top_errors = max([count for p in points for count in p.errors.values()] + [1])
    error_axes = _Axes(duration, top_errors)
    lines, legend = [], []
    for index, key in enumerate(keys):
        color = _PALETTE[index % len(_PALETTE)]
        series = [(p.t, p.errors.get(key, 0)) for p in points]
        lines.append(_polyline(error_axes, series, color, "errors"))
        legend.append(f'<li><span class="swatch" style="background:{color}"></span>{_e(key)}</li>')
    errors = (
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="errors by signature over time">'
        + error_axes.frame("handshake-time shutdown errors so far, by signature" if keys else "no errors")
        + "".join(lines)
        + _signal_markers(error_axes, records, started, with_dots=False)
        + "</svg>"
    )
    return pending + errors + (f'<ul class="legend">{"".join(legend)}</ul>' if legend else "")


def _regression(row: ErrorRow) -> str:
    line = row.regression_line()
    return f'<br><strong class="regression">{_e(line)}</strong>' if line else ""


def _link(reference: str | None) -> str:
    if not reference:
        return ""
    url = reference.split(" ", 1)[0]
    rest = reference[len(url) :]
    return f'<a href="{_e(url)}">{_e(url)}</a>{_e(rest)}' if url.startswith("https://") else _e(reference)


def _signal_row(record: SignalRecord, started: float) -> str:
    replaced = "" if record.replacement_seconds is None else f"{record.replacement_seconds:.2f}s"
    return (
        f"<tr><td class='n'>{record.id}</td><td class='n'>{record.time - started:.1f}s</td>"
        f"<td>{_e(record.signal)} to {_e(record.role)} {record.worker_pid}</td><td class='n'>{record.pending}</td>"
        f"<td>{_e(_by_scenario(record))}</td>"
        f"<td class='n'>{replaced}</td><td>{_e(record.exit_kind or '')}</td></tr>"
    )


def _by_scenario(record: SignalRecord) -> str:
    """The pending handshakes a signal caught per scenario, with how many were verifiably in that state."""
    return ", ".join(
        f"{name} {count} ({record.in_state_by_scenario.get(name, 0)} in state)"
        for name, count in sorted(record.pending_by_scenario.items())
        if count
    )


def soak_page(summary: RunSummary) -> str:
    gate, signals = summary.gate, summary.signals
    color = _VERDICT_COLORS.get(gate.verdict, "#5d6d7e")
    versions = "".join(
        f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>"
        for key, value in summary.versions.items()
        if value not in (None, "", [], {}) and not isinstance(value, list | dict | bool)
    )
    errors = (
        "".join(
            f"<tr><td>{_e(r.side)}</td><td>{_e(r.scenario)}</td><td><code>{_e(r.signature)}</code></td>"
            f"<td class='n'>{r.count}</td>"
            f"<td>{_e(r.example[:240])}</td><td>{_link(r.reference)}{_regression(r)}</td></tr>"
            for r in summary.errors
        )
        or "<tr><td colspan='6'>none</td></tr>"
    )
    landed = signals.landed_by_scenario
    scenarios = "".join(
        f"<tr><td>{_e(name)}</td><td class='n'>{landed.get(name, 0)}</td><td>"
        + _e(", ".join(f"{o} {n}" for o, n in summary.outcomes_by_scenario.get(name, {}).items()))
        + "</td></tr>"
        for name in summary.scenarios
    ) + "".join(
        f"<tr><td>{_e(name)}</td><td>skipped</td><td>{_e(why)}</td></tr>"
        for name, why in summary.skipped_scenarios.items()
    )
    rows = "".join(_signal_row(r, summary.started) for r in signals.records if not r.dry_run)
    rows = rows or "<tr><td colspan='7'>no signal sent</td></tr>"
    outcomes = "".join(f"<tr><td>{_e(k)}</td><td class='n'>{v}</td></tr>" for k, v in summary.outcomes.items())
    failing = f"<p>Failing signatures: {_e(', '.join(gate.failing))}</p>" if gate.failing else ""
    if summary.stop_reason:
        failing += f"<p>Stopped: {_e(summary.stop_reason)}.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>handshake-chaos soak: {_e(summary.release)} ({_e(summary.ws)})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1c2833; max-width: 1000px; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
.verdict {{ display: inline-block; padding: 0.3em 0.8em; color: #fff; background: {color}; border-radius: 4px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccd1d1; padding: 3px 8px; text-align: left; vertical-align: top; font-size: 13px; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.chart {{ width: 100%; height: auto; background: #fbfcfc; border: 1px solid #e5e8e8; margin: 0.4em 0; }}
.chart .axis {{ stroke: #7f8c8d; }} .chart .tick, .chart .label {{ font-size: 11px; fill: #566573; }}
.chart .pending, .chart .errors {{ stroke-width: 1.6; }}
.signal-marker line {{ stroke: #e67e22; stroke-width: 1; stroke-dasharray: 3 2; }}
.signal-marker .exposure {{ fill: #e67e22; }}
.legend {{ list-style: none; padding: 0; font-size: 13px; }}
.legend li {{ display: inline-block; margin-right: 1.2em; }}
.swatch {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
</style></head><body>
<h1>handshake-chaos soak: {_e(summary.release)} <small>({_e(summary.ws)}, {_e(summary.mode)}; \
{_e(", ".join(summary.scenarios) or "hold-accept")})</small></h1>
<p><span class="verdict">{_e(gate.verdict)} (exit {gate.exit_code})</span> {_e(gate.reason)}</p>{failing}
<p>{signals.sent} signals sent, {signals.landed_with_pending} landed on a worker holding pending handshakes;
{sum(summary.outcomes.values())} handshakes attempted over {summary.duration_seconds:.0f}s.</p>
<h2>Timeline</h2>
{timeline_svg(summary)}
<h2>Handshake-time shutdown errors</h2>
<table><tr><th>side</th><th>scenario</th><th>signature</th><th>count</th><th>example</th><th>reference</th></tr>{errors}</table>
<h2>Scenarios</h2>
<table><tr><th>scenario</th><th>caught by signals</th><th>outcomes</th></tr>{scenarios}</table>
<h2>Under test</h2>
<table>{versions}</table>
<h2>Signals</h2>
<table><tr><th>#</th><th>at</th><th>signal</th><th>pending</th><th>by scenario</th><th>replaced after</th>\
<th>exit</th></tr>{rows}</table>
<h2>Outcomes</h2>
<table>{outcomes}</table>
</body></html>
"""


def write_soak_page(summary: RunSummary, path: Path) -> None:
    path.write_text(soak_page(summary))
