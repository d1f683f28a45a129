"""The generated reference files in ``docs/``: option tables and JSON Schemas, from their one source.

    python -m chaos.commands.reference docs/

A test regenerates them and compares, so the docs never drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from chaos.commands.cli import ControllerSettings
from chaos.commands.matrix import MatrixSettings
from chaos.commands.soak import SoakSettings
from chaos.optionmodel import reference_table
from chaos.results import MatrixResult, RunSummary, json_schema
from chaos.run.options import ChaosOptions

_ENTRY_POINTS = (
    ("locust", "`locust -f locustfiles/handshake.py`", (ChaosOptions,)),
    ("soak", "`handshake-chaos soak`", (SoakSettings, ChaosOptions)),
    ("matrix", "`handshake-chaos matrix`", (MatrixSettings, SoakSettings, ChaosOptions)),
    ("controller", "`handshake-chaos controller`", (ChaosOptions, ControllerSettings)),
)


def options_markdown() -> str:
    lines = [
        "# Options",
        "",
        "Generated from the options model (`python -m chaos.commands.reference docs/`); do not edit.",
        "Every option is also read from its environment variable. In Locust's web UI, the options",
        "marked *at start only* are not offered in the start form: they shape the deployment, which",
        "is already running; every other one takes effect at the next Start. A blank field means the default.",
    ]
    for entry, title, classes in _ENTRY_POINTS:
        lines += ["", f"## {title}", "", "| option | default | env var | meaning |", "|---|---|---|---|"]
        for cls in classes:
            for flags, default, env_var, help_text in reference_table(cls, entry):
                lines.append(f"| `{flags}` | {default} | `{env_var}` | {help_text} |")
    return "\n".join(lines) + "\n"


def generated_files() -> dict[str, str]:
    """File name in docs/ -> content."""
    return {
        "options.md": options_markdown(),
        "summary.schema.json": json.dumps(json_schema(RunSummary), indent=2) + "\n",
        "matrix.schema.json": json.dumps(json_schema(MatrixResult), indent=2) + "\n",
    }


def main(argv: list[str]) -> int:
    directory = Path(argv[0] if argv else "docs")
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in generated_files().items():
        (directory / name).write_text(content)
        print(directory / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
