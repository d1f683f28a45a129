"""The Chaos tabs in Locust's web UI, and the live report page beside them.

Locust's extension mechanism: ``extended_tabs`` and ``extended_tables`` in the page's template
args declare the tabs and their columns, and ``extended_stats`` on every ``/stats/requests``
answer carries their rows, so they update with the rest of the UI. Three tabs: every signal,
every error signature (with its example and reference), and the gate's verdict so far. The
tables show text; ``/chaos`` serves the run as the soak's page (timeline, clickable references),
linked from the UI's download tab. Works on a local runner and on a distributed master (the
session lives there).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from chaos.report.page import soak_page
from chaos.results import RunSummary

SIGNALS_TABLE, ERRORS_TABLE, GATE_TABLE = "chaos-signals", "chaos-errors", "chaos-gate"
TABS = [
    {"title": "Chaos signals", "key": SIGNALS_TABLE},
    {"title": "Chaos errors", "key": ERRORS_TABLE},
    {"title": "Chaos gate", "key": GATE_TABLE},
]
# Column keys are single words: the UI camel-cases keys, and single words stay as they are.
TABLES = [
    {
        "key": SIGNALS_TABLE,
        "structure": [
            {"key": "id", "title": "#"},
            {"key": "at", "title": "at (s)"},
            {"key": "mode", "title": "mode"},
            {"key": "target", "title": "target"},
            {"key": "pending", "title": "pending caught"},
            {"key": "scenarios", "title": "by scenario"},
            {"key": "recovery", "title": "recovery (s)"},
            {"key": "exit", "title": "worker exit"},
        ],
    },
    {
        "key": ERRORS_TABLE,
        "structure": [
            {"key": "side", "title": "side"},
            {"key": "scenario", "title": "scenario"},
            {"key": "signature", "title": "signature"},
            {"key": "count", "title": "count"},
            {"key": "example", "title": "example"},
            {"key": "reference", "title": "reference"},
            {"key": "regression", "title": "regression"},
        ],
    },
    {
        "key": GATE_TABLE,
        "structure": [
            {"key": "verdict", "title": "verdict so far"},
            {"key": "code", "title": "exit code"},
            {"key": "reason", "title": "why"},
        ],
    },
]
# Rows shown per table: a long soak's signals would otherwise slow the page down.
_MAX_ROWS = 500


def extended_stats(summary: RunSummary) -> list[dict[str, Any]]:
    started = summary.started
    signals = [
        {
            "name": str(record.id),
            "id": record.id,
            "at": round(record.time - started, 1),
            "mode": summary.mode,
            "target": f"{record.signal} to {record.role} {record.worker_pid}"
            + (f" via {urlsplit(record.controller).netloc}" if record.controller else ""),
            "pending": record.pending,
            "scenarios": ", ".join(f"{name} {n}" for name, n in sorted(record.pending_by_scenario.items()) if n),
            "recovery": "" if record.replacement_seconds is None else round(record.replacement_seconds, 2),
            "exit": record.exit_kind or "",
        }
        for record in reversed(summary.signals.records)
        if not record.dry_run
    ][:_MAX_ROWS]
    errors = [
        {
            "name": f"{row.side}:{row.scenario}:{row.signature}",
            "side": row.side,
            "scenario": row.scenario,
            "signature": row.signature,
            "count": row.count,
            "example": row.example[:300],
            "reference": row.reference or "",
            "regression": row.regression_line() or "",
        }
        for row in summary.errors
    ][:_MAX_ROWS]
    gate = summary.gate
    return [
        {"key": SIGNALS_TABLE, "data": signals},
        {"key": ERRORS_TABLE, "data": errors},
        {
            "key": GATE_TABLE,
            "data": [{"name": "gate", "verdict": gate.verdict, "code": gate.exit_code, "reason": gate.reason}],
        },
    ]


def attach(web_ui: Any, summary: Callable[[], RunSummary | None]) -> None:
    """Adds the tabs, their live rows and the ``/chaos`` page to Locust's web UI."""
    from flask import Response, request

    web_ui.template_args["extended_tabs"] = TABS
    web_ui.template_args["extended_tables"] = TABLES
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./chaos", "title": "handshake-chaos: the run as a page (timeline, errors with references)"}
    ]

    @web_ui.app.after_request
    def _add_chaos_rows(response: Any) -> Any:
        current = summary() if request.path.endswith("/stats/requests") else None
        if current is None or response.status_code != 200:
            return response
        body = response.get_json(silent=True) or {}
        body["extended_stats"] = extended_stats(current)
        response.set_data(json.dumps(body))
        return response

    @web_ui.app.route("/chaos")
    @web_ui.auth_required_if_enabled
    def _chaos_page() -> Any:
        current = summary()
        if current is None:
            return Response("handshake-chaos has no run in this process", status=404, mimetype="text/plain")
        page = soak_page(current).replace("<head>", '<head><meta http-equiv="refresh" content="5">', 1)
        return Response(page, mimetype="text/html")
