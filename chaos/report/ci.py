"""What CI systems read of a run: JUnit XML and the GitHub Actions step summary.

JUnit XML (``--junit-xml FILE``), as Jenkins, GitLab, GitHub test reporters and Azure read it
(the Ant/Jenkins ``junit-10.xsd`` shape: ``testsuites > testsuite > testcase``, each case passing
or holding one ``failure``, ``error`` or ``skipped``):

- a soak (or ``locust --gate``) is one test suite with one test case per check of the gate:
  ``errors`` (no handshake-time shutdown error beyond the allowances), one ``allowance`` case per
  ``--allow SIGNATURE=N``, ``exposure`` (signals landed on workers holding pending handshakes) and
  one ``exposure`` case per scenario of the run, and ``run`` (it ran to its end). A failing case's
  text has every signature with its side, scenario, count, example and reference. Every case fails
  exactly when the gate does not pass: the file and the exit code agree.
- a matrix is one test suite with one test case per cell; a cell not run is ``skipped`` (why, in its
  message), an expected failure passes and says so.

The step summary (``$GITHUB_STEP_SUMMARY``) gets the Markdown report appended, once per command.
"""

from __future__ import annotations

import datetime
import os
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chaos.results import ErrorRow, MatrixCell, MatrixResult, RunSummary

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
# The versions a run names as properties of its suite (what report.md's table shows).
_VERSIONS = ("uvicorn", "gunicorn", "uvicorn_worker", "websockets", "wsproto", "h11", "python", "handshake_chaos")
_EXAMPLE_CHARS = 500


@dataclass
class Case:
    """One test case: passing, or with one outcome element (``failure``, ``error`` or ``skipped``)."""

    name: str
    classname: str
    outcome: str | None = None  # failure | error | skipped
    message: str = ""
    kind: str = ""  # the outcome's ``type`` attribute
    text: str = ""  # the outcome's body: what a person reads in the CI's test view
    output: str = ""  # system-out of a passing case
    time: float = 0.0


@dataclass
class Suite:
    name: str
    cases: list[Case]
    time: float = 0.0
    timestamp: float | None = None
    properties: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        outcomes = [case.outcome for case in self.cases]
        return {
            "tests": len(self.cases),
            "failures": outcomes.count("failure"),
            "errors": outcomes.count("error"),
            "skipped": outcomes.count("skipped"),
        }


def _error_lines(rows: Sequence[ErrorRow], allow: Mapping[str, int]) -> list[str]:
    lines = []
    for row in sorted(rows, key=lambda row: (-row.count, row.signature)):
        allowed = f" (--allow {allow[row.signature]})" if row.signature in allow else ""
        lines.append(f"{row.side} {row.signature}: {row.count} in scenario {row.scenario}{allowed}")
        if row.example:
            lines.append(f"    example: {row.example[:_EXAMPLE_CHARS]}")
        if row.reference:
            lines.append(f"    reference: {row.reference}")
        if (regression := row.regression_line()) is not None:
            lines.append(f"    REGRESSION: {regression}")
    return lines


def _per_signature(rows: Sequence[ErrorRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.signature] = counts.get(row.signature, 0) + row.count
    return counts


def soak_suite(summary: RunSummary, allow: Mapping[str, int], command: str = "soak") -> Suite:
    """The gate's checks of one run as test cases (see the module doc)."""
    classname = f"handshake-chaos.{command}.{summary.release}.{summary.ws}.{summary.mode}"
    gate, signals = summary.gate, summary.signals
    counts = _per_signature(summary.errors)
    cases: list[Case] = []

    beyond = {signature: count for signature, count in counts.items() if signature not in allow and count > 0}
    errors = Case("errors: no handshake-time shutdown error", classname)
    unallowed = [row for row in summary.errors if row.signature in beyond]
    if unallowed:
        total = sum(beyond.values())
        errors.outcome, errors.kind = "failure", "handshake_time_shutdown_errors"
        errors.message = f"{total} handshake-time shutdown errors: {', '.join(sorted(beyond))}"
        errors.text = "\n".join(_error_lines(unallowed, allow))
    else:
        allowed = sum(counts.get(signature, 0) for signature in allow)
        errors.output = "none" + (f" beyond the allowances ({allowed} allowed errors)" if allowed else "")
    cases.append(errors)

    for signature, limit in sorted(allow.items()):
        case = Case(f"allowance: {signature} at most {limit}", classname)
        count = counts.get(signature, 0)
        rows = [row for row in summary.errors if row.signature == signature]
        if count > limit:
            case.outcome, case.kind = "failure", "allowance_exceeded"
            case.message = f"{signature}: {count} errors, {limit} allowed"
            case.text = "\n".join(_error_lines(rows, allow))
        else:
            case.output = "\n".join([f"{count} of {limit} allowed", *_error_lines(rows, allow)])
        cases.append(case)

    exposure = Case("exposure: signals landed on workers holding pending handshakes", classname)
    pending = signals.pending_at_term
    detail = (
        f"signals sent {signals.sent}, landed with pending handshakes {signals.landed_with_pending}; "
        f"pending at each signal: {_spread(pending)}"
    )
    if signals.landed_with_pending == 0:
        exposure.outcome, exposure.kind = "failure", "inconclusive"
        exposure.message = "no signal landed on a worker holding pending handshakes: the run proves nothing"
        exposure.text = detail
    else:
        exposure.output = detail
    cases.append(exposure)

    one_scenario = len(summary.scenarios) == 1
    for scenario in summary.scenarios:
        case = Case(f"exposure: scenario {scenario}", classname)
        # With one scenario the gate asks only that signals landed with pending handshakes (the case above).
        landed = signals.landed_with_pending if one_scenario else signals.landed_by_scenario.get(scenario, 0)
        outcomes = summary.outcomes_by_scenario.get(scenario, {})
        detail = f"caught pending by {landed} signal{'' if landed == 1 else 's'}; outcomes: " + (
            ", ".join(f"{name} {count}" for name, count in outcomes.items()) or "none"
        )
        if landed == 0:
            case.outcome, case.kind = "failure", "inconclusive"
            case.message = f"no signal caught a pending handshake of {scenario}"
            case.text = detail
        else:
            case.output = detail
        cases.append(case)
    for scenario, why in summary.skipped_scenarios.items():
        cases.append(Case(f"exposure: scenario {scenario}", classname, "skipped", why, "not_applicable"))

    run = Case("run: ran to its end", classname, time=summary.duration_seconds)
    stopped_early = (summary.stop_reason or "").startswith("interrupted")
    if gate.verdict in ("error", "interrupted") or stopped_early:
        run.outcome, run.message = "error", summary.stop_reason or gate.reason
        run.kind = "interrupted" if stopped_early else gate.verdict
        run.text = f"verdict {gate.verdict}, exit code {gate.exit_code}: {gate.reason}"
    else:
        run.output = summary.stop_reason or ""
    cases.append(run)

    properties = {
        "release": summary.release,
        "ws": summary.ws,
        "mode": summary.mode,
        "server": summary.server,
        "verdict": gate.verdict,
        "exit_code": str(gate.exit_code),
        "reason": gate.reason,
        **{f"version.{name}": str(summary.versions[name]) for name in _VERSIONS if summary.versions.get(name)},
    }
    name = f"handshake-chaos {command} {summary.release} ({summary.ws}, {summary.mode})"
    started = summary.started or None
    return Suite(name, cases, summary.duration_seconds, started, properties)


def _spread(values: Sequence[int]) -> str:
    if not values:
        return "none"
    return f"min {min(values)}, mean {sum(values) / len(values):.1f}, max {max(values)}"


def matrix_suite(result: MatrixResult) -> Suite:
    """One test case per cell: its verdict as the matrix judged it (expected failures and baselines)."""
    cases = [_cell_case(cell) for cell in result.cells]
    properties = {
        "exit_code": str(result.exit_code),
        "duration_per_cell_seconds": f"{result.duration_per_cell_seconds:g}",
        "users": str(result.users),
        **({"baseline_release": result.baseline_release} if result.baseline_release else {}),
        **({"expect_fail": ",".join(result.expect_fail)} if result.expect_fail else {}),
    }
    return Suite("handshake-chaos matrix", cases, result.wall_seconds, None, properties)


def _cell_case(cell: MatrixCell) -> Case:
    extras: list[str] = [cell.server] if cell.server != "gunicorn-uvicorn" else []
    extras += [cell.scenario] if cell.scenario != "mix" else []
    name = " ".join([cell.release, cell.ws, cell.mode, *extras])
    case = Case(name, f"handshake-chaos.matrix.{cell.release}", time=cell.wall_seconds or 0.0)
    errors = "\n".join(
        f"{key.replace(':', ' ', 1)}: {count}" for key, count in sorted(cell.errors.items(), key=lambda i: -i[1])
    )
    exposure = (
        f"signals sent {cell.signals.sent}, landed with pending handshakes {cell.signals.landed_with_pending}; "
        f"pending at each signal: mean {cell.exposure.mean}, max {cell.exposure.max}"
    )
    report = f"report: {cell.report_dir}" if cell.report_dir else ""
    body = "\n".join(part for part in (errors, exposure, report) if part)
    if cell.status == "skipped" or cell.verdict == "skipped":
        case.outcome, case.kind, case.message = "skipped", "not_run", cell.reason
    elif cell.status == "error" or cell.verdict in ("error", "interrupted"):
        case.outcome, case.kind, case.message, case.text = "error", cell.verdict, cell.reason, body
    elif cell.verdict == "fail" and not cell.expected_fail:
        case.outcome, case.kind = "failure", "handshake_time_shutdown_errors"
        new = f" (new: {', '.join(cell.new_signatures)})" if cell.new_signatures else ""
        case.message, case.text = cell.reason + new, body
    elif cell.verdict == "inconclusive":
        case.outcome, case.kind, case.message, case.text = "failure", "inconclusive", cell.reason, body
    else:
        expected = "expected failure: " if cell.verdict == "fail" else ""
        case.output = f"{expected}{cell.verdict}: {cell.reason}\n{body}"
    return case


def error_suite(command: str, message: str, exit_code: int) -> Suite:
    """A command that stopped before any run (bad input, an environment that could not be built)."""
    case = Case("run: ran to its end", f"handshake-chaos.{command}", "error", message, f"exit_{exit_code}", message)
    return Suite(f"handshake-chaos {command}", [case], properties={"exit_code": str(exit_code)})


def junit_xml(suite: Suite) -> str:
    """The suite as a JUnit XML document (``<testsuites>`` holding it)."""
    counts = suite.counts()
    root = ET.Element("testsuites", name="handshake-chaos", time=_seconds(suite.time))
    for key in ("tests", "failures", "errors"):
        root.set(key, str(counts[key]))
    element = ET.SubElement(root, "testsuite", name=suite.name)
    for key, value in counts.items():
        element.set(key, str(value))
    element.set("time", _seconds(suite.time))
    if suite.timestamp is not None:
        moment = datetime.datetime.fromtimestamp(suite.timestamp, datetime.UTC)
        element.set("timestamp", moment.strftime("%Y-%m-%dT%H:%M:%S"))
    element.set("hostname", socket.gethostname())
    properties = ET.SubElement(element, "properties")
    for key, text in suite.properties.items():
        ET.SubElement(properties, "property", name=key, value=_clean(text))
    for case in suite.cases:
        item = ET.SubElement(element, "testcase", name=case.name, classname=case.classname, time=_seconds(case.time))
        if case.outcome is not None:
            outcome = ET.SubElement(item, case.outcome, message=_clean(case.message), type=case.kind)
            outcome.text = _clean(case.text) or None
        if case.output:
            ET.SubElement(item, "system-out").text = _clean(case.output)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


def _clean(text: str) -> str:
    """Text XML 1.0 can carry: a server's log line may hold control characters."""
    return "".join(ch if ch in "\t\n\r" or (" " <= ch and ch not in "\ufffe\uffff") else "\ufffd" for ch in text)


def write_junit(suite: Suite, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(junit_xml(suite))
    partial.replace(path)


def append_step_summary(markdown: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Appends ``markdown`` to the GitHub Actions step summary when the runner set one; returns its path."""
    target = (os.environ if environ is None else environ).get(STEP_SUMMARY)
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as summary:
        summary.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
