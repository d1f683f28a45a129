"""The matrix as a terminal table, Markdown, JSON and a self-contained HTML page."""

from __future__ import annotations

import html
from pathlib import Path

from chaos.results import MatrixCell, MatrixResult

COLUMNS = (
    "release",
    "ws",
    "mode",
    "server",
    "scenario",
    "verdict",
    "server errors",
    "client errors",
    "signals w/ pending",
    "exposure",
    "outcomes",
)


def _errors(cell: MatrixCell, side: str) -> str:
    items = [(key.split(":", 1)[1], count) for key, count in cell.errors.items() if key.startswith(side)]
    return ", ".join(f"{signature} {count}" for signature, count in sorted(items, key=lambda i: -i[1])) or "-"


def rows(result: MatrixResult) -> list[list[str]]:
    table = []
    for cell in result.cells:
        if cell.status != "ran":
            table.append(
                [cell.release, cell.ws, cell.mode, cell.server, cell.scenario, cell.status, cell.reason, "", "", "", ""]
            )
            continue
        verdict = cell.verdict + (" (expected)" if cell.verdict == "fail" and cell.expected_fail else "")
        if cell.new_signatures:
            verdict += " NEW: " + ", ".join(cell.new_signatures)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(cell.outcomes.items(), key=lambda i: -i[1]))
        table.append(
            [
                cell.release,
                cell.ws,
                cell.mode,
                cell.server,
                cell.scenario,
                verdict,
                _errors(cell, "server"),
                _errors(cell, "client"),
                f"{cell.signals.landed_with_pending}/{cell.signals.sent}",
                f"mean {cell.exposure.mean}, max {cell.exposure.max}",
                outcomes,
            ]
        )
    return table


def terminal(result: MatrixResult) -> str:
    table = [list(COLUMNS), *rows(result)]
    widths = [min(60, max(len(row[i]) for row in table)) for i in range(len(COLUMNS))]
    lines = []
    for number, row in enumerate(table):
        lines.append("  ".join(value[:60].ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append(f"wall time {result.wall_seconds:.0f}s, exit code {result.exit_code}")
    return "\n".join(lines)


def _footer(result: MatrixResult) -> str:
    return (
        f"{len(result.cells)} cells, up to {result.duration_per_cell_seconds:g}s each with {result.users} users; "
        f"wall time {result.wall_seconds:.0f}s; exit code {result.exit_code}."
    )


def markdown(result: MatrixResult) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(result):
        lines.append("| " + " | ".join(value.replace("|", "\\|") for value in row) + " |")
    lines.append("")
    lines.append(_footer(result))
    return "\n".join(lines) + "\n"


def html_page(result: MatrixResult) -> str:
    colors = {"pass": "#d4f7d4", "fail": "#f9d0d0", "inconclusive": "#fff2c2", "error": "#e0e0e0"}
    body = []
    for cell, row in zip(result.cells, rows(result), strict=True):
        color = colors.get(cell.verdict, "#f0f0f0")
        cells = "".join(f"<td>{html.escape(value)}</td>" for value in row)
        if cell.status == "ran" and cell.report_dir:
            # Each soak's own page sits in the cell's directory beside matrix.html.
            page = html.escape(f"{Path(cell.report_dir).name}/report.html", quote=True)
            cells = cells.replace(
                f"<td>{html.escape(row[4])}</td>", f'<td><a href="{page}">{html.escape(row[4])}</a></td>', 1
            )
        body.append(f'<tr style="background:{color}">{cells}</tr>')
    head = "".join(f"<th>{html.escape(column)}</th>" for column in COLUMNS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>handshake-chaos matrix</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: 4px 8px; text-align: left; vertical-align: top; font-size: 14px; }}
th {{ background: #333; color: #fff; }}
</style></head><body>
<h1>handshake-chaos matrix</h1>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<p>{html.escape(_footer(result))}</p>
</body></html>
"""


def write_all(result: MatrixResult, directory: Path) -> None:
    result.write(directory / "matrix.json")
    (directory / "matrix.md").write_text(markdown(result))
    (directory / "matrix.html").write_text(html_page(result))
    (directory / "matrix.txt").write_text(terminal(result) + "\n")
