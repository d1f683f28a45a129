"""The Grafana dashboard and the alert rules, proven against a real Prometheus scraping a real run."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from typing import Any

import pytest

from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.report.dashboard import SCENARIO_SELECTOR, dashboard, render
from tests.helpers import ROOT, assert_gone, free_port, read_summary, scrape, wait_until

DASHBOARDS = ROOT / "dashboards"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# Grafana's step and $__interval for a few minutes' range at its default resolution.
_STEP_SECONDS = 2


def _queries(board: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(where, PromQL, instant) of every panel target and every Prometheus annotation."""
    found = [
        (f"panel {p['id']} {p['title']} [{t['refId']}]", t["expr"], bool(t.get("instant")))
        for p in board["panels"]
        for t in p.get("targets", [])
    ]
    found += [
        (f"annotation {a['name']}", a["expr"], False)
        for a in board["annotations"]["list"]
        if a.get("datasource")
        != {
            "type": "grafana",
            "uid": "-- Grafana --",
        }
    ]
    return found


def _data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def _row_panels(board: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The data panels under the row titled ``title``, down to the next row."""
    rows = sorted((p for p in board["panels"] if p["type"] == "row"), key=lambda p: p["gridPos"]["y"])
    [row] = [r for r in rows if r["title"] == title]
    below = [r["gridPos"]["y"] for r in rows if r["gridPos"]["y"] > row["gridPos"]["y"]]
    end = min(below, default=10**6)
    return [p for p in _data_panels(board) if row["gridPos"]["y"] < p["gridPos"]["y"] < end]


def test_the_mode_row_breaks_the_run_down_by_chaos_mode():
    board = dashboard()
    below = _row_panels(board, "By chaos mode")
    assert len(below) == 3
    assert all("mode" in _grouping(t["expr"]) for p in below for t in p["targets"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert "handshake_chaos_target_info" in variables["mode"]["definition"]


def test_the_scenario_row_breaks_the_run_down_by_handshake_state():
    board = dashboard()
    below = _row_panels(board, "By scenario (the state each handshake was in)")
    assert len(below) == 3
    assert all("scenario" in _grouping(t["expr"]) for p in below for t in p["targets"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert 'scenario=~"$scenario"' not in variables["scenario"]["definition"]  # it lists every scenario
    # Every query of a series that carries a scenario filters by $scenario; no other series is asked to.
    for _where, expr, _instant in _queries(board):
        for name in ("shutdown_errors_total", "handshakes_total", "scenario_signals_landed_total"):
            if f"handshake_chaos_{name}{{" in expr:
                assert f"handshake_chaos_{name}{{{SCENARIO_SELECTOR}}}" in expr, expr
        assert f"signals_total{{{SCENARIO_SELECTOR}}}" not in expr


def test_the_json_is_generated_from_the_code():
    assert (DASHBOARDS / "handshake-chaos.json").read_text() == render(), "run: python -m chaos.report.dashboard > ..."


def test_dashboard_structure_provisions_as_it_is():
    board = json.loads((DASHBOARDS / "handshake-chaos.json").read_text())
    text = json.dumps(board)
    assert board["uid"] == "handshake-chaos" and board["id"] is None
    assert "__inputs" not in board and "${DS_" not in text
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["release"]["multi"] and "handshake_chaos" in variables["release"]["definition"]
    assert "ws" in variables
    for panel in _data_panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    for where, expr, _instant in _queries(board):
        for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", where
        assert "$release" in expr and "$ws" in expr and "$mode" in expr, where
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for subject in ("signature", "outcomes", "signals", "exposure", "replacement", "pending", "under test"):
        assert subject in titles


# The rules of grafana/dashboard-linter (lint/rules.go, NewRuleSet), by the names a `.lint` file uses.
_LINTER_RULES = {
    "template-datasource-rule",
    "template-job-rule",
    "template-instance-rule",
    "template-label-promql-rule",
    "template-on-time-change-reload-rule",
    "panel-datasource-rule",
    "panel-title-description-rule",
    "panel-units-rule",
    "panel-no-targets-rule",
    "target-logql-rule",
    "target-logql-auto-rule",
    "target-promql-rule",
    "target-rate-interval-rule",
    "target-job-rule",
    "target-instance-rule",
    "target-counter-agg-rule",
    "uneditable-dashboard",
}


def test_the_linter_exclusions_name_real_rules_each_with_a_reason_and_each_still_needed():
    import yaml

    config = yaml.safe_load((DASHBOARDS / ".lint").read_text())
    board = json.loads((DASHBOARDS / "handshake-chaos.json").read_text())
    excluded = {}
    for section in ("exclusions", "warnings"):
        for rule, entry in (config.get(section) or {}).items():
            assert rule in _LINTER_RULES, f"{section}: {rule} is not a dashboard-linter rule"
            assert len(entry["reason"].split()) >= 8, f"{rule}: say why"
            for match in entry.get("entries", []):
                assert match["dashboard"] == board["title"], rule  # an entry matches by exact title
            excluded[rule] = entry
    # Each exclusion stands for something the dashboard really does (else it hides a rule for nothing).
    names = {variable["name"]: variable for variable in board["templating"]["list"]}
    if {"template-job-rule", "target-job-rule"} & set(excluded):
        assert "job" not in names and not any('job=~"$job"' in expr for _, expr, _ in _queries(board))
    if {"template-instance-rule", "target-instance-rule"} & set(excluded):
        assert "instance" not in names
    if "uneditable-dashboard" in excluded:
        assert board["editable"] is True
    if "template-datasource-rule" in excluded:
        assert names["datasource"]["label"] not in ("Data source", "Prometheus data source")


def test_promtool_accepts_config_and_rules():
    assert PROMTOOL, "promtool is missing: scripts/test installs Debian's prometheus package"
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ):
        done = subprocess.run([PROMTOOL, *args], cwd=DASHBOARDS, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr


def _query(prometheus_url: str, expr: str, over: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """An instant query, or with ``over=(start, end)`` a range query the way Grafana runs a panel."""
    if over is None:
        url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    else:
        params = {"query": expr, "start": f"{over[0]:.3f}", "end": f"{over[1]:.3f}", "step": f"{_STEP_SECONDS}"}
        url = f"{prometheus_url}/api/v1/query_range?" + urllib.parse.urlencode(params)
    answer = json.loads(scrape(url))
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _grouping(expr: str) -> set[str]:
    groups = re.findall(r"by \(([^)]*)\)", expr)
    return {label.strip() for label in groups[0].split(",")} - {"le"} if groups else set()


@pytest.fixture
def prometheus_scraping_a_real_run(tmp_path, release_cache):
    """A real 0.19.0 run (it has errors to show) scraped every second by a real Prometheus."""
    assert PROMETHEUS, "prometheus is missing: scripts/test installs Debian's prometheus package"
    env = build_environment(ReleaseSpec("0.19.0"), release_cache)
    metrics_port, prometheus_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: handshake-chaos\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
        + [f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    locust_command = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "handshake.py"), "--headless"]
    locust_command += ["-u", "40", "-r", "40", "-t", "90s", "--target-python", env.python, "--ws", "wsproto"]
    locust_command += ["--hold-seconds", "1", "--keep-open-seconds", "0.5", "--term-interval", "1"]
    locust_command += ["--metrics-port", str(metrics_port), "--chaos-report-json", str(tmp_path / "report.json")]
    locust = subprocess.Popen(locust_command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{prometheus_port}"
    started = time.time()
    try:
        wait_until(lambda: _ready(url), 60, "prometheus ready")
        yield url, started
    finally:
        locust.send_signal(signal.SIGINT)
        locust.wait(timeout=120)
        prometheus.terminate()
        prometheus.wait(timeout=60)
    assert_gone(read_summary(tmp_path / "report.json")["target"]["pids"])


def _ready(url: str) -> bool:
    try:
        return "Ready" in scrape(f"{url}/-/ready")
    except OSError:
        return False


def test_every_panel_query_returns_data_from_a_real_prometheus(prometheus_scraping_a_real_run):
    url, started = prometheus_scraping_a_real_run
    wait_until(
        lambda: (
            _query(url, "sum(handshake_chaos_shutdown_errors_total) > 0")
            and _query(url, "sum(handshake_chaos_signals_landed_with_pending_total) > 1")
            and _query(url, "count_over_time(handshake_chaos_signals_total[1m]) > 20")
        ),
        120,
        "errors, two TERMs with pending handshakes and 20 scrapes in Prometheus",
    )
    board = dashboard()
    release = re.escape("0.19.0").replace("\\", "\\\\")
    # The dashboard's time range is the run so far, as a user looking at it now would have it.
    end = time.time()
    run_range = (started, end)
    series_counts = {}
    for where, expr, instant in _queries(board):
        promql = (
            expr.replace("$__rate_interval", "20s")
            .replace("$__interval", f"{_STEP_SECONDS}s")
            .replace("$__range", f"{int(end - started) + 1}s")
            .replace("$release", release)
            .replace("$ws", "wsproto")
            .replace("$mode", "worker-term")
            .replace("$scenario", ".*")  # what Grafana sends for "All" (the variable's allValue)
        )
        result = _query(url, promql, None if instant else run_range)
        assert result, f"{where} returned no data: {promql}"
        for series in result:
            assert _grouping(expr) <= set(series["metric"]), (where, series["metric"])
            if "release" in _grouping(expr):
                assert series["metric"]["release"] == "0.19.0"
        series_counts[where] = len(result)
    print("series per query:", json.dumps(series_counts, indent=1))


def test_every_panel_follows_the_dashboard_rules():
    import yaml

    board = dashboard()
    for panel in _data_panels(board):
        where = panel["title"]
        assert panel.get("description"), f"{where}: no description"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel["datasource"]["uid"] == "${datasource}", where
        if panel["type"] == "table" or "count" in where.lower() or "(time range)" in where:
            if panel["type"] != "table" or "under test" not in where:
                assert panel["fieldConfig"]["defaults"].get("decimals") == 0, f"{where}: counts are whole numbers"
        # A bar chart fed several series draws nonsense: by-kind breakdowns use a bar gauge or a table.
        assert panel["type"] != "barchart", where
    headline = [p for p in board["panels"] if p["type"] == "stat"]
    assert headline and headline[0]["gridPos"]["y"] == 0 and "increase(" in headline[0]["targets"][0]["expr"]
    assert board["links"] and {link["type"] for link in board["links"]} >= {"dashboards", "link"}
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"][0]["rules"]
    runbook = (DASHBOARDS / "runbook.md").read_text().lower()
    for rule in rules:
        annotations = rule["annotations"]
        # The shipped rules are the template `handshake-chaos dashboards` writes absolute (tested below).
        assert annotations["dashboard_url"].startswith(f"/d/{board['uid']}/"), rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "runbook.md" and f"## {anchor.replace('-', ' ')}" in runbook.replace("-", " "), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
    alerts_text = (DASHBOARDS / "alerts.yml").read_text()
    assert "`for:`" in alerts_text  # the for: choices are documented where they are made


def test_every_stat_and_gauge_of_errors_or_crashes_is_red_from_one():
    """0 is green and 1 is already red (Grafana's default red is at 80: a failing release would show green)."""
    red_from_one = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
    checked = []
    for panel in _data_panels(dashboard()):
        if panel["type"] not in ("stat", "gauge", "bargauge"):
            continue
        queries = " ".join(target["expr"] for target in panel["targets"])
        config = panel["fieldConfig"]
        if "shutdown_errors_total" in queries:
            assert config["defaults"]["color"] == {"mode": "thresholds"}, panel["title"]
            assert config["defaults"]["thresholds"]["steps"] == red_from_one, panel["title"]
            checked.append(panel["title"])
        elif "worker_exits_total" in queries:
            # Healthy exits (signalled, clean) stay green; the kinds that dropped connections are red from 1.
            assert config["defaults"]["thresholds"]["steps"] == [{"color": "green", "value": None}], panel["title"]
            [override] = config["overrides"]
            pattern = override["matcher"]["options"].strip("/")
            assert override["matcher"]["id"] == "byRegexp"
            for kind in ("crash", "nonzero", "killed", "timeout"):
                assert re.search(pattern, f"0.19.0 {kind}"), kind
            for kind in ("signalled", "clean"):
                assert not re.search(pattern, f"0.19.0 {kind}"), kind
            assert {"id": "thresholds", "value": {"mode": "absolute", "steps": red_from_one}} in override["properties"]
            checked.append(panel["title"])
    assert len(checked) == 2, checked


@pytest.mark.parametrize(
    ("urls", "runbook", "grafana"),
    [
        ({}, "file://{dir}/runbook.md", "http://127.0.0.1:3000"),
        (
            {"runbook_url": "https://example.com/ops/runbook.md", "grafana_url": "https://grafana.example.com/"},
            "https://example.com/ops/runbook.md",
            "https://grafana.example.com",
        ),
    ],
)
def test_the_alerts_written_link_absolutely_and_still_pass_their_unit_tests(tmp_path, urls, runbook, grafana):
    import yaml

    from chaos.report.dashboard import write_shipped

    written = write_shipped(tmp_path, **urls)
    assert tmp_path / "runbook.md" in written
    assert (tmp_path / "runbook.md").read_text() == (DASHBOARDS / "runbook.md").read_text()
    runbook = runbook.format(dir=tmp_path.resolve())
    for rule in yaml.safe_load((tmp_path / "alerts.yml").read_text())["groups"][0]["rules"]:
        annotations = rule["annotations"]
        assert annotations["runbook_url"].startswith(runbook + "#"), annotations
        assert annotations["dashboard_url"].startswith(f"{grafana}/d/handshake-chaos/"), annotations
    assert "runbook.md#" not in (tmp_path / "alerts.test.yml").read_text().replace(runbook + "#", "")
    assert PROMTOOL, "promtool is missing: scripts/test installs Debian's prometheus package"
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "SUCCESS" in done.stdout + done.stderr, done.stdout + done.stderr


def test_alert_links_must_be_absolute(tmp_path):
    from chaos.errors import UsageError
    from chaos.report.dashboard import write_shipped

    with pytest.raises(UsageError, match="--grafana-url must be an absolute"):
        write_shipped(tmp_path, grafana_url="grafana.example.com")
