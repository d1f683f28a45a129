"""A bisect's report: the terminal table, ``bisect.md`` and the JUnit XML (``bisect.json`` is the result itself)."""

from __future__ import annotations

from xml.etree import ElementTree

from chaos.commands.bisection import BisectResult, Search, StepRecord

_HEADER = ("stage", "step", "result", "verdict", "tries", "wall", "evidence")


def _runs(result: BisectResult) -> str:
    scenarios = ", ".join(result.scenarios) or "every one that applies"
    app = f", app {result.app}" if result.app else ""
    return f"ws {result.ws}, mode {result.mode}, server {result.server}, scenarios: {scenarios}{app}"


def _searches(result: BisectResult) -> list[Search]:
    return [result.releases] + ([result.commits] if result.commits is not None else [])


def _rows(result: BisectResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for search in _searches(result):
        for step in search.steps:
            verdicts = "/".join(attempt.verdict for attempt in step.attempts)
            rows.append(
                (
                    search.stage,
                    step.label,
                    step.outcome,
                    verdicts,
                    str(len(step.attempts)),
                    f"{step.wall_seconds:.0f}s",
                    step.reason,
                )
            )
    return rows


def _answers(result: BisectResult) -> list[str]:
    lines = [result.answer]
    if result.commit_answer is not None:
        lines.append(result.commit_answer)
    return lines


def _tested(search: Search) -> str:
    noun = f"{search.stage}s"
    return f"{noun}: {len(search.steps)} of {len(search.candidates)} tested"


def terminal(result: BisectResult) -> str:
    rows = [_HEADER, *_rows(result)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER) - 1)]
    lines = [f"handshake-chaos bisect: {line}" for line in _answers(result)]
    lines += [f"note: {note}" for note in result.notes]
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    tested = "; ".join(_tested(search) for search in _searches(result))
    lines += ["", f"{_runs(result)}; {tested}; wall {result.wall_seconds:.0f}s; exit {result.exit_code}"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _steps_table(search: Search) -> list[str]:
    lines = [
        "| # | step | result | verdicts | wall | evidence | report |",
        "|---:|---|---|---|---:|---|---|",
    ]
    for number, step in enumerate(search.steps, start=1):
        reports = ", ".join(f"`{attempt.report_dir}`" for attempt in step.attempts if attempt.report_dir)
        verdicts = " / ".join(attempt.verdict for attempt in step.attempts)
        lines.append(
            f"| {number} | {_cell(step.label)} | **{step.outcome}** | {verdicts} | {step.wall_seconds:.0f} s | "
            f"{_cell(step.reason)} | {reports} |"
        )
    return lines


def markdown(result: BisectResult) -> str:
    followed = f"`{result.signature}`" if result.signature else "any handshake-time error"
    lines = [f"# handshake-chaos bisect: {followed}, {result.good} (good) .. {result.bad} (bad)", ""]
    lines += [f"**{line}**" + "  " for line in _answers(result)]
    lines += ["", f"{_runs(result)}; inconclusive steps retried up to {result.retries} times."]
    lines += [f"Wall time {result.wall_seconds:.0f} s; exit {result.exit_code}.", ""]
    lines += [f"> {note}" for note in result.notes] + ([""] if result.notes else [])
    for search in _searches(result):
        heading = "Releases" if search.stage == "release" else "Commits"
        extra = ""
        if search.stage == "commit":
            extra = f" of `{result.repo}`, each built as of {result.commits_as_of}"
        lines += [f"## {heading}{extra}", "", f"{_tested(search).capitalize()}; {search.status}: {search.reason}."]
        lines += [""] + _steps_table(search) + [""]
    return "\n".join(lines)


def _testcase(suite: ElementTree.Element, stage: str, step: StepRecord) -> None:
    case = ElementTree.SubElement(
        suite, "testcase", classname=f"handshake-chaos.bisect.{stage}", name=step.label, time=f"{step.wall_seconds}"
    )
    if step.outcome == "skipped":
        ElementTree.SubElement(case, "skipped", message=step.reason)
    ElementTree.SubElement(case, "system-out").text = f"{step.outcome}: {step.reason}"


def junit_xml(result: BisectResult) -> str:
    """One test case per step (skipped steps are skipped), and one for the boundary, failed unless found."""
    suites = ElementTree.Element("testsuites")
    steps = [(search.stage, step) for search in _searches(result) for step in search.steps]
    failed = result.exit_code != 0
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        name="handshake-chaos bisect",
        tests=str(len(steps) + 1),
        failures=str(int(failed)),
        skipped=str(sum(1 for _, step in steps if step.outcome == "skipped")),
        time=f"{result.wall_seconds}",
    )
    for stage, step in steps:
        _testcase(suite, stage, step)
    boundary = ElementTree.SubElement(
        suite, "testcase", classname="handshake-chaos.bisect", name="boundary", time=f"{result.wall_seconds}"
    )
    if failed:
        ElementTree.SubElement(boundary, "failure", message=" / ".join(_answers(result)))
    ElementTree.SubElement(boundary, "system-out").text = "\n".join(_answers(result))
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
