"""What ``soak`` and ``matrix`` give CI besides their exit code: ``--junit-xml``, ``--json`` and the step summary.

- ``--junit-xml FILE``: the gate's checks (soak) or the cells (matrix) as JUnit XML (``chaos.report.ci``),
  written however the command ends, a run that could not start included.
- ``--json``: stdout carries the summary (``summary.json``) or the matrix result (``matrix.json``) as
  JSON and nothing else; everything the command would print there goes to stderr. A command that
  could not run prints ``{"exit_code": N, "error": ..., "gate": {...}}``.
- ``$GITHUB_STEP_SUMMARY``: set (as on a GitHub Actions runner), ``report.md`` or ``matrix.md`` is
  appended to it once per command; the soaks of a matrix add nothing of their own.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.errors import ChaosError
from chaos.optionmodel import option
from chaos.report.ci import append_step_summary, error_suite, matrix_suite, soak_suite, write_junit
from chaos.results import MatrixResult, RunSummary

_SOAK_AND_MATRIX = frozenset({"soak", "matrix"})


@dataclass(frozen=True)
class CiSettings:
    junit_xml: str | None = option(
        None,
        "--junit-xml",
        "write the gate's checks (matrix: its cells) as JUnit XML to this file",
        entry_points=_SOAK_AND_MATRIX,
        group="output",
    )
    json: bool = option(
        False,
        "--json",
        "print the summary (matrix: the result) as JSON on stdout, and nothing else there",
        entry_points=_SOAK_AND_MATRIX,
        group="output",
    )


# What a command's run gives back: its exit code, and what --json prints.
Outcome = tuple[int, dict[str, Any]]


@contextlib.contextmanager
def stdout_for_json(settings: CiSettings) -> Iterator[None]:
    """With ``--json``, everything printed while the command runs goes to stderr: stdout is the JSON's."""
    if not settings.json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def finish_soak(summary: RunSummary, report: Path, settings: CiSettings, allow: Mapping[str, int]) -> Outcome:
    if settings.junit_xml:
        write_junit(soak_suite(summary, allow), Path(settings.junit_xml))
    _step_summary(report / "report.md")
    return summary.gate.exit_code, summary.to_json()


def finish_matrix(result: MatrixResult, report: Path, settings: CiSettings) -> Outcome:
    if settings.junit_xml:
        write_junit(matrix_suite(result), Path(settings.junit_xml))
    _step_summary(report / "matrix.md")
    return result.exit_code, result.to_json()


def _step_summary(markdown: Path) -> None:
    if markdown.is_file():
        append_step_summary(markdown.read_text())


def _print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def run_with_outputs(command: str, settings: CiSettings, run: Callable[[], Outcome]) -> int:
    """Runs ``run`` (which writes the JUnit file and the step summary as it finishes, ``finish_*``), then
    prints its JSON. When it stops with an error before any report exists, the CI outputs still say
    so: a JUnit error case, a step summary line, the JSON of the error; the error goes on up."""
    try:
        with stdout_for_json(settings):
            code, data = run()
    except ChaosError as exc:
        code = int(exc.exit_code)
        if settings.junit_xml:
            with contextlib.suppress(OSError):
                write_junit(error_suite(command, str(exc), code), Path(settings.junit_xml))
        with contextlib.suppress(OSError):
            append_step_summary(f"**handshake-chaos {command}: error** (exit {code}): {exc}\n")
        if settings.json:
            gate = {"verdict": "error", "exit_code": code, "reason": str(exc)}
            _print_json({"exit_code": code, "error": str(exc), "gate": gate})
        raise
    if settings.json:
        _print_json(data)
    return code
