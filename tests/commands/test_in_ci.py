"""The gating commands as CI runs them: in a service repository's checkout (its Locust configuration
around them), with ``--junit-xml``, ``--json`` and ``$GITHUB_STEP_SUMMARY``; and the help a person reads."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.commands.cli import build_parser
from tests.helpers import CLI, FAST, SIGNATURE_596, junit_cases, read_junit, read_summary, signatures

HOSTILE_HOST = "ws://127.0.0.1:9"  # the discard port: nothing listens, every handshake would be refused
# What a service repository's own Locust setup says: its load test's host, and (for the plugin's options,
# which a soak forwards only when they differ from their defaults) a controller that sends nothing.
LOCUST_CONF = f"host = {HOSTILE_HOST}\nmax-signals = 0\nhold-seconds = 0\n"
PYPROJECT = f'[project]\nname = "service"\n\n[tool.locust]\nhost = "{HOSTILE_HOST}"\nmax-signals = 0\n'


def _service_checkout(base: Path) -> tuple[Path, dict[str, str]]:
    """A directory as a service repository's CI job starts in: its locust.conf, its pyproject.toml with
    [tool.locust], a ~/.locust.conf, LOCUST_* variables; and the runner's step summary file."""
    service, home = base / "service", base / "home"
    service.mkdir()
    home.mkdir()
    (service / "locust.conf").write_text(LOCUST_CONF)
    (service / "pyproject.toml").write_text(PYPROJECT)
    (home / ".locust.conf").write_text(LOCUST_CONF)
    step_summary = base / "step-summary.md"
    step_summary.write_text("## an earlier step\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "LOCUST_HOST": HOSTILE_HOST,
        "LOCUST_USERS": "1",
        "LOCUST_RUN_TIME": "1s",
        "GITHUB_STEP_SUMMARY": str(step_summary),
    }
    return service, env


def _locust_reads(cwd: Path, env: dict[str, str], sealed: bool) -> dict[str, Any]:
    """What Locust's parser (with the plugin's options) makes of no arguments at all, from ``cwd``."""
    script = (
        "import json, sys\n"
        "from chaos.locust_plugin.main import seal\n"
        "if sys.argv[1] == 'sealed': seal()\n"
        "import chaos.locust_plugin.plugin\n"
        "from locust.argument_parser import get_parser\n"
        "options = get_parser().parse_args([])\n"
        "print(json.dumps({'host': options.host, 'max_signals': options.max_signals, 'users': options.num_users}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "sealed" if sealed else "open"],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_locust_itself_reads_the_surroundings_and_sealed_reads_nothing(tmp_path):
    service, env = _service_checkout(tmp_path)
    # Unsealed, Locust takes the host from LOCUST_HOST and the plugin's options from the config files.
    assert _locust_reads(service, env, sealed=False) == {"host": HOSTILE_HOST, "max_signals": "0", "users": 1}
    assert _locust_reads(service, env, sealed=True) == {"host": None, "max_signals": "", "users": None}


def test_a_soak_in_a_service_repository_ci_finds_596_and_says_so_in_every_ci_output(tmp_path, release_cache):
    service, env = _service_checkout(tmp_path)
    report, junit = tmp_path / "report", tmp_path / "junit" / "soak.xml"
    done = subprocess.run(
        [*CLI, "soak", "--uvicorn", "0.19.0", "--ws", "wsproto", "--duration", "60s", "--users", "30"]
        + ["--until-verdict", "--scenario", "hold-accept", *FAST, "--report-dir", str(report)]
        + ["--cache-dir", str(release_cache), "--junit-xml", str(junit), "--json"],
        cwd=service,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    summary = read_summary(report / "summary.json")
    # Sealed: the load went to the soak's own deployment, its controller signalled, nothing was refused.
    assert summary["target"]["url"].startswith("ws://127.0.0.1:") and not summary["target"]["url"].endswith(":9")
    assert summary["signals"]["sent"] >= 1 and summary["outcomes"].get("refused", 0) == 0
    assert signatures(summary).get(SIGNATURE_596, 0) > 0
    command = summary["soak"]["command"]
    assert command[1:4] == ["-m", "chaos.locust_plugin.main", "--sealed"] and "-u" in command
    # --json: stdout is the summary and nothing else (the console's lines went to stderr).
    assert json.loads(done.stdout) == summary
    assert "report:" in done.stderr and "gate: fail (exit 1)" in done.stderr
    # --junit-xml: the gate's checks, as a CI reads them.
    suite = read_junit(junit)
    cases = junit_cases(suite)
    kind, message, text = cases["errors: no handshake-time shutdown error"]
    assert kind == "failure" and SIGNATURE_596 in message and "cannot be sent during the handshake" in text
    assert "issues/596" in text
    assert cases["exposure: signals landed on workers holding pending handshakes"][0] is None
    # The step summary: the earlier step's text, then the soak's report.md, once.
    step = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert step == "## an earlier step\n" + (report / "report.md").read_text()


def test_bad_input_still_gives_ci_its_outputs(tmp_path):
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [*CLI, "soak", "--uvicorn", "0.19.0", "--ws", "tornado", "--junit-xml", str(junit), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(tmp_path / "step.md")},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    printed = json.loads(done.stdout)
    assert printed["exit_code"] == 2 and printed["gate"]["verdict"] == "error" and "tornado" in printed["error"]
    assert junit_cases(read_junit(junit))["run: ran to its end"][0] == "error"
    assert "**handshake-chaos soak: error** (exit 2)" in (tmp_path / "step.md").read_text()


def test_a_matrix_in_ci_one_case_per_cell(tmp_path, release_cache):
    report, junit, step = tmp_path / "matrix", tmp_path / "junit.xml", tmp_path / "step.md"
    done = subprocess.run(
        [*CLI, "matrix", "--uvicorn", "0.19.0", "--ws", "wsproto", "websockets-sansio", "--duration", "60s"]
        + ["--users", "30", "--scenario", "hold-accept", *FAST, "--report-dir", str(report)]
        + ["--cache-dir", str(release_cache), "--junit-xml", str(junit), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(step)},
    )
    assert done.returncode == 1, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result == json.loads((report / "matrix.json").read_text())
    cases = junit_cases(read_junit(junit))
    ran, skipped = "0.19.0 wsproto worker-term hold-accept", "0.19.0 websockets-sansio worker-term hold-accept"
    assert list(cases) == [ran, skipped]
    assert cases[ran][0] == "failure" and f"server {SIGNATURE_596}" in cases[ran][2]
    assert cases[skipped][0] == "skipped" and "websockets-sansio" in cases[skipped][1]
    assert step.read_text() == (report / "matrix.md").read_text()  # the cells' soaks added nothing of their own


def test_locust_with_the_gate_writes_junit_and_the_step_summary(tmp_path):
    junit, step, summary_file = tmp_path / "junit.xml", tmp_path / "step.md", tmp_path / "summary.json"
    done = subprocess.run(
        [*CLI, "locust", "--headless", "-u", "20", "-r", "20", "-t", "60s", "--gate", "--until-verdict"]
        + ["--scenario", "hold-accept", *FAST, "--junit-xml", str(junit), "--chaos-report-json", str(summary_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(step)},
    )
    summary = read_summary(summary_file)
    assert done.returncode == summary["gate"]["exit_code"], done.stderr[-3000:]
    suite = read_junit(junit)
    properties = {prop.name: prop.value for prop in suite.properties()}
    assert properties["verdict"] == summary["gate"]["verdict"] and suite.name.startswith("handshake-chaos locust ")
    failed = [name for name, (kind, _, _) in junit_cases(suite).items() if kind in ("failure", "error")]
    assert bool(failed) == (summary["gate"]["verdict"] != "pass")
    assert step.read_text().startswith(f"# handshake-chaos soak: {summary['release']}")


def test_help_lists_the_plugin_options_in_groups(tmp_path):
    shown = subprocess.run([*CLI, "locust", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    titles = [f"handshake-chaos {group} options" for group in ("load", "signals", "deployment", "detection", "gate")]
    positions = [text.index(title) for title in titles]
    assert positions == sorted(positions)
    assert text.index("--hold-seconds") > positions[0] and text.index("--term-interval") > positions[1]
    assert "--junit-xml" in text and "HANDSHAKE_CHAOS_TERM_INTERVAL" in text
    assert "--users" in text  # Locust's own options are there too


@pytest.mark.parametrize("command", ["soak", "matrix", "controller"])
def test_every_command_groups_its_options_and_shows_examples(command):
    parser = build_parser()
    [commands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    sub = commands.choices[command]
    text = sub.format_help()
    groups = [line for line in text.splitlines() if line.endswith(" options:")]
    order = ["load", "signals", "deployment", "detection", "gate", "output"]
    assert [line.split()[0] for line in groups] == [name for name in order if f"{name} options:" in text]
    assert len(groups) >= 3 and "examples:" in text
    assert text.count("(default: 100)") <= 1  # each default printed once, with its option


def test_verbosity_before_or_after_the_subcommand_and_the_version(tmp_path):
    parser = build_parser()
    assert parser.parse_args(["-v", "soak"]).verbose and parser.parse_args(["soak", "-v"]).verbose
    assert parser.parse_args(["soak", "-q"]).quiet and not parser.parse_args(["soak"]).verbose
    shown = subprocess.run([*CLI, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("handshake-chaos ")


def test_env_vars_are_named_after_their_flags_and_the_old_names_still_work(monkeypatch):
    monkeypatch.setenv("HANDSHAKE_CHAOS_WITH", "starlette")
    assert build_parser().parse_args(["soak"]).with_packages == ["starlette"]
    monkeypatch.delenv("HANDSHAKE_CHAOS_WITH")
    monkeypatch.setenv("HANDSHAKE_CHAOS_WITH_PACKAGES", "starlette")  # the name before: an alias
    assert build_parser().parse_args(["soak"]).with_packages == ["starlette"]
    monkeypatch.setenv("HANDSHAKE_CHAOS_TARGET_PID", "4242")
    assert build_parser().parse_args(["controller"]).target_pid == "4242"
    monkeypatch.setenv("HANDSHAKE_CHAOS_SIGNAL_NAME", "INT")
    assert build_parser().parse_args(["controller"]).signal_name == "INT"
    monkeypatch.setenv("HANDSHAKE_CHAOS_SIGNAL", "TERM")  # the flag's name wins over the alias
    assert build_parser().parse_args(["controller"]).signal_name == "TERM"


def test_every_option_is_in_a_group_and_every_env_var_is_one_options():
    from chaos.commands import bisect, health
    from chaos.commands.cli import ControllerSettings
    from chaos.commands.matrix import MatrixSettings
    from chaos.commands.outputs import CiSettings
    from chaos.commands.soak import SoakSettings
    from chaos.optionmodel import GROUPS, declared, declared_on
    from chaos.run.options import ChaosOptions

    commands: tuple[type, ...] = (ChaosOptions, SoakSettings, MatrixSettings, ControllerSettings, CiSettings)
    extra = (cls for cls, _entry in (*bisect.OPTION_CLASSES, *health.OPTION_CLASSES))
    classes = tuple(dict.fromkeys((*commands, *extra)))
    for cls in classes:
        for item in declared(cls):
            assert item.meta.group in GROUPS, (cls.__name__, item.name)
    for entry in ("locust", "soak", "matrix", "controller"):
        names = [name for cls in classes for item in declared_on(cls, entry) for name in item.env_vars]
        assert len(names) == len(set(names)), entry
