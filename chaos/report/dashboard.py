"""The Grafana dashboard, as code: the one source of ``dashboards/handshake-chaos.json``.

    python -m chaos.report.dashboard > dashboards/handshake-chaos.json

A test regenerates it and compares, so the JSON never drifts from this file. Every
query filters on ``$release``, ``$ws`` and ``$mode``, every ``rate()`` uses ``$__rate_interval``,
every panel uses ``${datasource}``, and file provisioning needs no ``__inputs``.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos.errors import UsageError

if TYPE_CHECKING:
    from importlib.abc import Traversable

UID = "handshake-chaos"
TITLE = "handshake-chaos: handshake-time shutdown errors"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'release=~"$release", ws=~"$ws", mode=~"$mode"'
# The series that carry a scenario (errors, outcomes, the signals that caught each one) are filtered by it too.
SCENARIO_SELECTOR = SELECTOR + ', scenario=~"$scenario"'
SIGNALS_SERIES = f"handshake_chaos_signals_total{{{SELECTOR}}}"
# Counts of what must not happen (errors, bad worker exits): 0 is green, 1 is already red. Grafana's own
# default turns red only at 80, which would show a failing release green.
RED_FROM_ONE = {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}
# Counts of what must happen (a scenario caught by a signal): 0 is red (nothing was tested), 1 green.
GREEN_FROM_ONE = {"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]}
ALL_GREEN = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
# How a signalled worker may end badly (handshake_chaos_worker_exits_total's kinds that dropped connections).
BAD_EXITS = "crash|nonzero|killed|timeout"


def _target(expr: str, legend: str = "", instant: bool = False, table: bool = False, ref: str = "A") -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "refId": ref, "legendFormat": legend or "__auto"}
    if instant:
        target["instant"] = True
        target["range"] = False
    if table:
        target["format"] = "table"
    return target


def _quantile(quantile: float, histogram: str, ref: str = "A") -> dict[str, Any]:
    """A histogram's quantile per release, as a timeseries target (legend: release and pNN)."""
    return _target(
        f"histogram_quantile({quantile}, sum by (release, le) "
        f"(rate({histogram}_bucket{{{SELECTOR}}}[$__rate_interval])))",
        f"{{{{release}}}} p{round(quantile * 100)}",
        ref=ref,
    )


def _panel(
    panel_id: int,
    title: str,
    kind: str,
    grid: tuple[int, int, int, int],
    targets: list[dict[str, Any]],
    *,
    description: str,
    unit: str,
    decimals: int | None = None,
    thresholds: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A panel; every one says what it shows (description) and in what unit; ``thresholds`` color it."""
    x, y, w, h = grid
    defaults: dict[str, Any] = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    if thresholds is not None:
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = thresholds
    panel: dict[str, Any] = {
        "id": panel_id,
        "title": title,
        "description": description,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
    }
    panel.update(extra)
    return panel


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def panels() -> list[dict[str, Any]]:
    errors = f"handshake_chaos_shutdown_errors_total{{{SCENARIO_SELECTOR}}}"
    return [
        _panel(
            10,
            "Handshake-time shutdown errors (time range)",
            "stat",
            (0, 0, 6, 9),
            [_target(f"round(sum(increase({errors}[$__range])))", "errors", instant=True)],
            description="All handshake-time shutdown errors of the selected releases in the time range: 0 is a pass "
            "(green); 1 or more is a fail (red).",
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
            },
            unit="none",
            decimals=0,  # counts: whole numbers
            thresholds=RED_FROM_ONE,
        ),
        _panel(
            1,
            "Handshake-time shutdown errors by release and signature (time range)",
            "table",
            (6, 0, 10, 9),
            [
                _target(
                    f"round(sum by (release, ws, side, signature) (increase({errors}[$__range]))) > 0",
                    instant=True,
                    table=True,
                )
            ],
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
            description="Every handshake-time shutdown error in the time range, per release, side and signature.",
            unit="none",
            decimals=0,  # counts: whole numbers
        ),
        _panel(
            2,
            "What is under test",
            "table",
            (16, 0, 8, 9),
            [
                _target(
                    "max by (release, ws, mode, server, uvicorn, gunicorn, python, websockets, wsproto, h11, "
                    "worker_class) "
                    f"(handshake_chaos_target_info{{{SELECTOR}}})",
                    instant=True,
                    table=True,
                )
            ],
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
            description="The versions each release label ran with: uvicorn, gunicorn, Python, the ws libraries.",
            unit="none",
        ),
        _panel(
            3,
            "Shutdown errors per second by release and signature",
            "timeseries",
            (0, 9, 24, 9),
            [_target(f"sum by (release, signature) (rate({errors}[$__rate_interval]))", "{{release}} {{signature}}")],
            description="When the errors happened: per-second rate by release and signature (TERMs are annotations).",
            unit="ops",
        ),
        _panel(
            4,
            "Handshake outcomes per second by release",
            "timeseries",
            (0, 18, 12, 9),
            [
                _target(
                    f"sum by (release, outcome) "
                    f"(rate(handshake_chaos_handshakes_total{{{SCENARIO_SELECTOR}}}[$__rate_interval]))",
                    "{{release}} {{outcome}}",
                )
            ],
            description="How every handshake attempt ended: accepted, HTTP rejections, dropped, reset, timeout, ...",
            unit="reqps",
        ),
        _panel(
            5,
            "Pending handshakes now",
            "timeseries",
            (12, 18, 12, 9),
            [_target(f"sum by (release, ws) (handshake_chaos_pending_handshakes{{{SELECTOR}}})", "{{release}} {{ws}}")],
            description="Handshakes sent and not yet answered: what a TERM can catch at any moment.",
            unit="none",
            decimals=0,  # counts: whole numbers
        ),
        _panel(
            6,
            "Signals sent per minute",
            "timeseries",
            (0, 27, 8, 8),
            [
                _target(
                    f"60 * sum by (release, signal, role) "
                    f"(rate(handshake_chaos_signals_total{{{SELECTOR}}}[$__rate_interval]))",
                    "{{release}} {{signal}} to {{role}}",
                ),
                _target(
                    f"60 * sum by (release, signal, role) "
                    f"(rate(handshake_chaos_signals_landed_with_pending_total{{{SELECTOR}}}[$__rate_interval]))",
                    "{{release}} {{signal}} with pending",
                    ref="B",
                ),
            ],
            description="Signals the controller sent, and those that caught at least one pending handshake.",
            unit="opm",
        ),
        _panel(
            7,
            "Exposure: pending handshakes held at each TERM",
            "timeseries",
            (8, 27, 8, 8),
            [
                _target(
                    f"sum by (release) (rate(handshake_chaos_term_exposure_handshakes_sum{{{SELECTOR}}}"
                    f"[$__rate_interval])) / sum by (release) "
                    f"(rate(handshake_chaos_term_exposure_handshakes_count{{{SELECTOR}}}[$__rate_interval]))",
                    "{{release}} mean",
                ),
                _quantile(0.95, "handshake_chaos_term_exposure_handshakes", ref="B"),
            ],
            description="How many pending handshakes the signalled worker held at each TERM (mean and p95).",
            unit="none",
            decimals=1,
        ),
        _panel(
            8,
            "Worker replacement time",
            "timeseries",
            (16, 27, 8, 8),
            [
                _quantile(0.5, "handshake_chaos_worker_replacement_seconds"),
                _quantile(0.95, "handshake_chaos_worker_replacement_seconds", ref="B"),
            ],
            description="From a signal to the replacement worker serving (p50 and p95).",
            unit="s",
        ),
        _panel(
            9,
            "How signalled workers exited (time range)",
            "bargauge",
            (0, 35, 24, 8),
            [
                _target(
                    f"round(sum by (release, kind) "
                    f"(increase(handshake_chaos_worker_exits_total{{{SELECTOR}}}[$__range]))) > 0",
                    "{{release}} {{kind}}",
                    instant=True,
                )
            ],
            description="Signalled workers by how they ended: signalled or clean is healthy (green); crash, nonzero, "
            "killed and timeout dropped every connection the worker held (red from 1).",
            options={
                "displayMode": "basic",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
            unit="none",
            decimals=0,  # counts: whole numbers
            thresholds=ALL_GREEN,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": f"/ ({BAD_EXITS})$/"},
                    "properties": [
                        {"id": "color", "value": {"mode": "thresholds"}},
                        {"id": "thresholds", "value": RED_FROM_ONE},
                    ],
                }
            ],
        ),
        *mode_row(43),
        *scenario_row(60),
    ]


def mode_row(y: int) -> list[dict[str, Any]]:
    """The same run seen per chaos mode: which way of stopping the server breaks it, and how often."""
    errors = f"handshake_chaos_shutdown_errors_total{{{SCENARIO_SELECTOR}}}"
    row = {
        "id": 20,
        "type": "row",
        "title": "By chaos mode",
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
    }
    return [
        row,
        _panel(
            21,
            "Shutdown errors by mode and signature (time range)",
            "table",
            (0, y + 1, 12, 8),
            [
                _target(
                    f"round(sum by (release, mode, signature) (increase({errors}[$__range]))) > 0",
                    instant=True,
                    table=True,
                )
            ],
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
            description="Every handshake-time shutdown error in the time range, per release, chaos mode and "
            "signature: a failure seen only under master-term or rollout is one worker TERMs do not reach.",
            unit="none",
            decimals=0,  # counts: whole numbers
        ),
        _panel(
            22,
            "Signals per minute by mode",
            "timeseries",
            (12, y + 1, 12, 8),
            [
                _target(
                    f"60 * sum by (mode, signal, role) (rate({SIGNALS_SERIES}[$__rate_interval]))",
                    "{{mode}}: {{signal}} to {{role}}",
                )
            ],
            description="What each chaos mode signalled: TERM/INT to workers, TTOU/HUP/TERM to a master.",
            unit="opm",
        ),
        _panel(
            23,
            "Handshake outcomes per second by mode",
            "timeseries",
            (0, y + 9, 24, 8),
            [
                _target(
                    "sum by (mode, outcome) "
                    f"(rate(handshake_chaos_handshakes_total{{{SCENARIO_SELECTOR}}}[$__rate_interval]))",
                    "{{mode}} {{outcome}}",
                )
            ],
            description="How handshakes ended under each chaos mode (a whole-deployment restart shows as a "
            "pause in accepts, not as refusals: clients wait in the listening socket's backlog).",
            unit="reqps",
        ),
    ]


def scenario_row(y: int) -> list[dict[str, Any]]:
    """The run per handshake state: which state a shutdown breaks, and whether signals caught each one."""
    errors = f"handshake_chaos_shutdown_errors_total{{{SCENARIO_SELECTOR}}}"
    landed = f"handshake_chaos_scenario_signals_landed_total{{{SCENARIO_SELECTOR}}}"
    row = {
        "id": 30,
        "type": "row",
        "title": "By scenario (the state each handshake was in)",
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
    }
    return [
        row,
        _panel(
            31,
            "Shutdown errors by scenario and signature (time range)",
            "table",
            (0, y + 1, 12, 8),
            [
                _target(
                    f"round(sum by (release, scenario, side, signature) (increase({errors}[$__range]))) > 0",
                    instant=True,
                    table=True,
                )
            ],
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
            description="Every handshake-time shutdown error in the time range by the state it was found in. "
            '"mixed": a server-side error whose worker held handshakes of several scenarios when signalled.',
            unit="none",
            decimals=0,
        ),
        _panel(
            32,
            "Signals that caught each scenario pending (time range)",
            "bargauge",
            (12, y + 1, 12, 8),
            [_target(f"round(sum by (scenario) (increase({landed}[$__range])))", "{{scenario}}", instant=True)],
            description="A pass needs every scenario of the run caught by at least one signal: a state no signal "
            "found pending was not tested (red at 0).",
            unit="none",
            decimals=0,
            thresholds=GREEN_FROM_ONE,
        ),
        _panel(
            33,
            "Handshake outcomes per second by scenario",
            "timeseries",
            (0, y + 9, 24, 8),
            [
                _target(
                    "sum by (scenario, outcome) "
                    f"(rate(handshake_chaos_handshakes_total{{{SCENARIO_SELECTOR}}}[$__rate_interval]))",
                    "{{scenario}} {{outcome}}",
                )
            ],
            description="What a clean shutdown does differs by state: a 500/503 for a pending upgrade, the denial's "
            "own status for a denial, a 1012 close after an accept; a closed connection for a request never whole.",
            unit="reqps",
        ),
    ]


def annotation_queries() -> list[dict[str, Any]]:
    return [
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "name": "TERM signals",
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": "orange",
            # $__rate_interval, not $__interval: windows one step wide miss the increments that fall
            # between two steps' samples; $__rate_interval spans a step plus a scrape, so none is lost.
            "expr": f"sum by (release, role) (changes({SIGNALS_SERIES}[$__rate_interval])) > 0",
            "step": "$__interval",
            "titleFormat": "TERM",
            "textFormat": "{{release}}: TERM to a {{role}}",
            "useValueForTime": False,
        },
    ]


def variables() -> list[dict[str, Any]]:
    """The template variables (the docs list them from here: ``python -m chaos.commands.reference docs/``)."""
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        _variable("release", "Release", "label_values(handshake_chaos_target_info, release)"),
        _variable("ws", "ws", 'label_values(handshake_chaos_target_info{release=~"$release"}, ws)'),
        _variable(
            "mode",
            "Chaos mode",
            'label_values(handshake_chaos_target_info{release=~"$release", ws=~"$ws"}, mode)',
        ),
        _variable(
            "scenario",
            "Scenario",
            f"label_values(handshake_chaos_handshakes_total{{{SELECTOR}}}, scenario)",
        ),
    ]


def dashboard() -> dict[str, Any]:
    return {
        "id": None,
        "uid": UID,
        "title": TITLE,
        "description": "Websocket handshakes held pending while TERM rolls through gunicorn+uvicorn workers.",
        "tags": ["handshake-chaos", "uvicorn", "gunicorn", "websocket"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": annotation_queries()},
        "templating": {"list": variables()},
        "panels": panels(),
        "links": [
            {
                "title": "handshake-chaos dashboards",
                "type": "dashboards",
                "tags": ["handshake-chaos"],
                "asDropdown": True,
            },
            {"title": "Alert rules", "type": "link", "url": "/alerting/list?search=handshake-chaos", "icon": "bolt"},
        ],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def shipped_files() -> dict[str, Traversable]:
    """The dashboard, provisioning, Prometheus scrape config and alert rules the package ships, by relative path."""
    root = importlib.resources.files("chaos.report") / "dashboards"
    found: dict[str, Traversable] = {}

    def walk(directory: Traversable, prefix: str) -> None:
        for entry in directory.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith((".json", ".yml", ".md")):
                found[prefix + entry.name] = entry

    walk(root, "")
    return dict(sorted(found.items()))


DEFAULT_GRAFANA_URL = "http://127.0.0.1:3000"  # the Grafana of the shipped docker-compose.yml
RUNBOOK = "runbook.md"


def absolute_links(text: str, runbook_url: str, grafana_url: str) -> str:
    """The alert rules (and their unit tests) with absolute ``runbook_url`` and ``dashboard_url`` links."""
    text = text.replace(f'runbook_url: "{RUNBOOK}#', f'runbook_url: "{runbook_url}#')
    return text.replace('dashboard_url: "/d/', f'dashboard_url: "{grafana_url.rstrip("/")}/d/')


def write_shipped(
    directory: Path, overwrite: bool = False, runbook_url: str | None = None, grafana_url: str | None = None
) -> list[Path]:
    """Writes the shipped files under ``directory``; refuses to replace a different file unless told to.

    The alert rules link absolutely: to ``runbook_url`` (default: the runbook written beside them, as a
    file:// URL) and to the dashboard in the Grafana at ``grafana_url`` (default: ``DEFAULT_GRAFANA_URL``).
    """
    files = shipped_files()
    if not files:
        raise UsageError("this installation has no dashboards (a broken package?)")
    runbook = runbook_url or (directory.resolve() / RUNBOOK).as_uri()
    grafana = grafana_url or DEFAULT_GRAFANA_URL
    for flag, url in (("--runbook-url", runbook), ("--grafana-url", grafana)):
        if not url.startswith(("http://", "https://", "file://")):
            raise UsageError(f"{flag} must be an absolute http://, https:// or file:// URL, got {url!r}")
    targets = {}
    for name, entry in files.items():
        data = entry.read_bytes()
        if name.startswith("alerts"):
            data = absolute_links(data.decode(), runbook, grafana).encode()
        targets[directory / name] = data
    clashes = [path for path, data in targets.items() if path.exists() and path.read_bytes() != data]
    if clashes and not overwrite:
        raise UsageError(f"{clashes[0]} exists and differs (use --force to replace it)")
    try:
        for path, data in targets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write the dashboards to {directory}: {exc.strerror or exc}") from None
    return list(targets)


def runbook_text() -> str:
    """The alerts' runbook as the package ships it (docs/runbook.md is generated from it)."""
    return (importlib.resources.files("chaos.report") / "dashboards" / RUNBOOK).read_text()


if __name__ == "__main__":
    print(render(), end="")
