"""The generated reference docs, from their one source: whole files in ``docs/`` (option tables,
JSON Schemas) and marked sections inside the hand-written ``docs/contract.md``, ``docs/detection.md``
and ``docs/metrics.md`` (the catalogue of known failures, the Prometheus metrics, the Grafana
dashboard's variables).

    python -m chaos.commands.reference docs/

rewrites the files in that directory and, in the documents of the repository it belongs to (its
parent), everything between ``<!-- generated: NAME ... -->`` and ``<!-- end generated: NAME -->``;
the prose around the markers is left as it is. A test regenerates them and compares, so the docs
never drift from the code.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from chaos import catalog
from chaos.commands import bisect, health
from chaos.commands.bisection import BisectResult
from chaos.commands.cli import ControllerSettings
from chaos.commands.matrix import MatrixSettings
from chaos.commands.outputs import CiSettings
from chaos.commands.soak import SoakSettings
from chaos.errors import UsageError
from chaos.optionmodel import GROUPS, reference_table
from chaos.report import dashboard, metrics
from chaos.report.dashboard import runbook_text
from chaos.results import WS_IMPLEMENTATIONS, MatrixResult, RunSummary, json_schema
from chaos.run.options import ChaosOptions

COMMAND = "python -m chaos.commands.reference docs/"

_ENTRY_POINTS = (
    ("locust", "`locust -f locustfiles/handshake.py`", (ChaosOptions,)),
    ("soak", "`handshake-chaos soak`", (SoakSettings, ChaosOptions, CiSettings)),
    ("matrix", "`handshake-chaos matrix`", (MatrixSettings, SoakSettings, ChaosOptions, CiSettings)),
    ("controller", "`handshake-chaos controller`", (ChaosOptions, ControllerSettings)),
)


def options_markdown() -> str:
    lines = [
        "# Options",
        "",
        "Generated from the options model (`python -m chaos.commands.reference docs/`); do not edit.",
        "Every option is also read from its environment variable, named after its flag (`--with`:",
        "`HANDSHAKE_CHAOS_WITH`); an earlier name, shown as *(or NAME)*, is still read when the flag's is not",
        "set. Options are grouped as `--help` groups them. In Locust's web UI, the options",
        "marked *at start only* are not offered in the start form: they shape the deployment, which",
        "is already running; every other one takes effect at the next Start. A blank field means the default.",
    ]
    sections: list[tuple[str, list[tuple[type, str]]]] = [
        (title, [(cls, entry) for cls in classes]) for entry, title, classes in _ENTRY_POINTS
    ]
    sections.append(("`handshake-chaos bisect`", list(bisect.OPTION_CLASSES)))
    sections.append(("`handshake-chaos health`", list(health.OPTION_CLASSES)))
    for title, tables in sections:
        lines += ["", f"## {title}"]
        rows = [row for cls, entry in tables for row in reference_table(cls, entry)]
        # In the groups --help shows them in, each group's options in declaration order.
        for group in (*GROUPS, ""):
            grouped = [row for row in rows if row[0] == group]
            if not grouped:
                continue
            lines += ["", f"**{group or 'other'}**: {GROUPS.get(group, '')}", ""]
            lines += ["| option | default | env var | meaning |", "|---|---|---|---|"]
            for _, flags, default, env_var, help_text in grouped:
                lines.append(f"| `{flags}` | {default} | `{env_var}` | {help_text} |")
    return "\n".join(lines) + "\n"


def generated_files() -> dict[str, str]:
    """File name in docs/ -> content."""
    return {
        "options.md": options_markdown(),
        "summary.schema.json": json.dumps(json_schema(RunSummary), indent=2) + "\n",
        "matrix.schema.json": json.dumps(json_schema(MatrixResult), indent=2) + "\n",
        "bisect.schema.json": json.dumps(json_schema(BisectResult), indent=2) + "\n",
        # The runbook ships in the package (handshake-chaos dashboards writes it beside the alert rules).
        "runbook.md": "<!-- generated: a copy of chaos/report/dashboards/runbook.md (python -m chaos.commands.reference"
        " docs/); edit that file -->\n" + runbook_text(),
    }


def _cell(text: str) -> str:
    """Text as one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


_GITHUB_ISSUE = re.compile(r"https://github\.com/[^/]+/([^/]+)/(issues|pull)/(\d+)")
_GITHUB_FILE = re.compile(r"https://github\.com/[^/]+/([^/]+)/blob/[^/]+/(?:.+/)?([^/]+)")


def _reference(reference: str) -> str:
    """A catalogue reference (a URL, then a note) as a short link: ``[uvicorn #596](...) (fixed by PR #1737)``."""
    url, _, note = reference.partition(" ")
    if issue := _GITHUB_ISSUE.fullmatch(url):
        repo, kind, number = issue.groups()
        text = f"{repo} {'PR ' if kind == 'pull' else ''}#{number}"
    elif file := _GITHUB_FILE.fullmatch(url):
        text = f"{file.group(1)} `{file.group(2)}`"
    else:
        text = url
    return f"[{text}]({url})" + (f" {note}" if note else "")


def _fixed_in(entry: catalog.KnownFailure) -> str:
    """Per ws implementation the failure occurs with, the first uvicorn release without it."""
    if not entry.fixed_in:
        return "any release, any ws implementation"
    by_release: dict[str, list[str]] = {}
    for ws in (*WS_IMPLEMENTATIONS, *sorted(set(entry.fixed_in) - set(WS_IMPLEMENTATIONS))):
        if ws in entry.fixed_in:
            by_release.setdefault(entry.fixed_in[ws] or "not fixed", []).append(ws)
    return "; ".join(f"{', '.join(names)}: {release}" for release, names in by_release.items())


def catalogue_markdown() -> list[str]:
    errors = [entry for entry in catalog.CATALOG if not entry.noise]
    noise = [entry for entry in catalog.CATALOG if entry.noise]
    lines = [
        "**Known failures.** *Fixed in* is the first uvicorn release without the failure, for each ws",
        "implementation it occurs with (one not named does not show it); *not fixed*: every release so far;",
        "*any release*: not a bug a release fixes (a setting, or another server's behaviour).",
        "",
    ]
    lines += _table(
        ("signature", "what", "reference", "fixed in"),
        ((f"`{e.signature}`", e.summary, _reference(e.reference), _fixed_in(e)) for e in errors),
    )
    lines += [
        "",
        "**Generic signatures.** Whatever a shutdown leaves that no known failure names is still counted,",
        "under one of these.",
        "",
    ]
    lines += _table(
        ("signature", "side", "what"),
        ((f"`{g.signature}`", g.side, g.what) for g in catalog.GENERIC_SIGNATURES),
    )
    lines += [
        "",
        "**Noise.** Recognised and counted apart (`noise` in `summary.json`), never as a shutdown error.",
        "",
    ]
    lines += _table(
        ("signature", "what", "reference"),
        ((f"`{e.signature}`", e.summary, _reference(e.reference)) for e in noise),
    )
    return lines


def _metric_type(spec: metrics.MetricSpec) -> str:
    if spec.type == "histogram":
        return "histogram (`_bucket`, `_sum`, `_count`)"
    return spec.type


def _meaning(spec: metrics.MetricSpec) -> str:
    if spec.buckets:
        return f"{spec.meaning} Buckets: {', '.join(f'{bound:g}' for bound in spec.buckets)}."
    return spec.meaning


def metrics_markdown() -> list[str]:
    return _table(
        ("metric", "type", "labels", "meaning"),
        (
            (f"`{spec.exposed_name}`", _metric_type(spec), ", ".join(spec.labels), _meaning(spec))
            for spec in metrics.METRICS
        ),
    )


def _variable_values(variable: Mapping[str, Any]) -> str:
    if variable["type"] == "datasource":
        return f"the {variable['query'].capitalize()} datasources of the Grafana it runs in"
    return f"`{variable['definition']}`"


def _variable_choice(variable: Mapping[str, Any]) -> str:
    if not variable.get("multi"):
        return "one"
    return "several, or All" if variable.get("includeAll") else "several"


def dashboard_variables_markdown() -> list[str]:
    return _table(
        ("variable", "shown as", "values", "pick"),
        ((f"`${v['name']}`", v["label"], _variable_values(v), _variable_choice(v)) for v in dashboard.variables()),
    )


# name -> (its source, its lines)
SECTIONS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "catalogue": ("chaos/catalog.py", catalogue_markdown),
    "metrics": ("chaos/report/metrics.py", metrics_markdown),
    "dashboard-variables": ("chaos/report/dashboard.py", dashboard_variables_markdown),
}
# The hand-written documents (relative to the repository) and the generated sections each holds.
DOCUMENTS: dict[str, tuple[str, ...]] = {
    "docs/contract.md": ("catalogue", "metrics", "dashboard-variables"),
    "docs/detection.md": ("catalogue",),
    "docs/metrics.md": ("metrics", "dashboard-variables"),
}
_SECTION = re.compile(r"<!-- generated: ([\w-]+)\b[^\n]*?-->\n.*?<!-- end generated: \1 -->", re.DOTALL)


def section(name: str) -> str:
    """A generated section with its markers, as it stands in a document."""
    source, lines = SECTIONS[name]
    begin = f"<!-- generated: {name} (from {source} by `{COMMAND}`; do not edit) -->"
    return "\n".join([begin, "", *lines(), "", f"<!-- end generated: {name} -->"])


def with_sections(text: str, document: str) -> str:
    """``text`` with every generated section rewritten; its sections must be exactly ``DOCUMENTS[document]``."""
    found = [match.group(1) for match in _SECTION.finditer(text)]
    if sorted(found) != sorted(DOCUMENTS[document]):
        raise UsageError(
            f"{document}: expected the generated sections {sorted(DOCUMENTS[document])}, found {sorted(found)} "
            f"(each between <!-- generated: NAME --> and <!-- end generated: NAME -->)"
        )
    return _SECTION.sub(lambda match: section(match.group(1)), text)


def documents(root: Path) -> dict[str, str]:
    """Each hand-written document under ``root`` (by relative path) with its generated sections rewritten."""
    return {name: with_sections((root / name).read_text(), name) for name in DOCUMENTS}


def main(argv: list[str]) -> int:
    directory = Path(argv[0] if argv else "docs")
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in generated_files().items():
        (directory / name).write_text(content)
        print(directory / name)
    root = directory.resolve().parent
    try:
        rewritten = documents(root)
    except (UsageError, OSError) as exc:
        print(f"reference: {exc}", file=sys.stderr)
        return 2
    for name, content in rewritten.items():
        (root / name).write_text(content)
        print(os.path.relpath(root / name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
