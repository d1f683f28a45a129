"""The GitHub Action (action.yml): valid metadata for GitHub's action schema, and its steps' shell run here
as a runner runs them, with the GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / RUNNER_TEMP files a runner gives each
step. Only the steps that are other actions (setup-uv, cache, upload-artifact) are stood in for."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chaos import __version__
from tests.helpers import ROOT, SIGNATURE_596, junit_cases, read_junit, read_summary, signatures

ACTION_FILE = ROOT / "action.yml"
SCHEMA = json.loads((ROOT / "tests" / "data" / "github-action.schema.json").read_text())
WORKFLOWS = ROOT / ".github" / "workflows"
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
FAST_ARGS = "--hold-seconds 1 --term-interval 1 --term-jitter 0.5 --metrics-port 0"


def _action() -> dict[str, Any]:
    return yaml.safe_load(ACTION_FILE.read_text())  # type: ignore[no-any-return]


def _errors(action: dict[str, Any]) -> list[str]:
    return [error.message for error in jsonschema.Draft7Validator(SCHEMA).iter_errors(action)]


def test_action_yml_is_valid_action_metadata():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert _errors(_action()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda a: a["inputs"]["releases"].pop("description"),
        lambda a: a["runs"]["steps"][1].pop("shell"),  # a composite's run step must name its shell
        lambda a: a["outputs"]["verdict"].pop("value"),
        lambda a: a["runs"].update(using="node99"),
        lambda a: a["inputs"].update({"bad id": {"description": "x"}}),
    ],
)
def test_the_schema_rejects_what_github_rejects(break_it):
    action = copy.deepcopy(_action())
    break_it(action)
    assert _errors(action)


def test_inputs_reach_the_shell_only_through_the_environment():
    for step in _action()["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step.get("name")
            assert step["shell"] == "bash"


def test_setup_uv_installs_the_uv_of_the_lock():
    [setup] = [step for step in _action()["runs"]["steps"] if step.get("uses", "").startswith("astral-sh/setup-uv@")]
    locked = re.search(r'name = "uv"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text())
    assert locked is not None and setup["with"]["version"] == locked.group(1)


@dataclass
class Runner:
    """What a GitHub runner does with a composite action's steps, for the parts this test needs."""

    base: Path
    inputs: dict[str, str]
    env: dict[str, str]
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    used: dict[str, dict[str, str]] = field(default_factory=dict)
    failed: bool = False

    @property
    def temp(self) -> Path:
        return self.base / "runner-temp"

    def value(self, expression: str) -> str:
        parts = expression.split(".")
        if parts[0] == "inputs":
            return self.inputs[parts[1]]
        if expression == "github.action_path":
            return str(ROOT)
        if expression == "runner.temp":
            return str(self.temp)
        if expression == "runner.os":
            return "Linux"
        if parts[0] == "steps" and parts[2] == "outputs":
            return self.outputs.get(parts[1], {}).get(parts[3], "")
        raise AssertionError(f"expression this test does not evaluate: {expression}")

    def render(self, text: str) -> str:
        return _EXPRESSION.sub(lambda match: self.value(match.group(1)), text)

    def condition(self, text: str | None) -> bool:
        """``if:`` as the action writes it: terms joined by &&, each always(), X == 'v' or X != 'v'."""
        if text is None:
            return not self.failed
        result = True
        for term in (part.strip() for part in text.split("&&")):
            if term == "always()":
                continue
            match = re.fullmatch(r"([\w.-]+) (==|!=) '([^']*)'", term)
            assert match is not None, f"condition this test does not evaluate: {term}"
            equal = self.value(match.group(1)) == match.group(3)
            result = result and (equal if match.group(2) == "==" else not equal)
        return result and ("always()" in text or not self.failed)

    def run(self, steps: list[dict[str, Any]], stand_ins: dict[str, Any]) -> None:
        self.temp.mkdir(parents=True, exist_ok=True)
        for number, step in enumerate(steps):
            name = step.get("id") or f"step{number}"
            if not self.condition(step.get("if")):
                continue
            if "uses" in step:
                action = step["uses"].split("@")[0]
                self.used[action] = {key: self.render(str(value)) for key, value in step.get("with", {}).items()}
                stand_ins[action](self, self.used[action])
                continue
            files = {kind: self.base / f"{name}.{kind}" for kind in ("output", "summary", "path", "env")}
            for path in files.values():
                path.write_text("")
            script = self.base / f"{name}.sh"
            script.write_text(step["run"])
            env = {
                **self.env,
                "RUNNER_TEMP": str(self.temp),
                "GITHUB_OUTPUT": str(files["output"]),
                "GITHUB_STEP_SUMMARY": str(files["summary"]),
                "GITHUB_PATH": str(files["path"]),
                "GITHUB_ENV": str(files["env"]),
                **{key: self.render(str(value)) for key, value in step.get("env", {}).items()},
            }
            # What the runner runs for `shell: bash`.
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                env=env,
                cwd=self.base,
                capture_output=True,
                text=True,
                timeout=600,
            )
            self.logs[name] = done.stdout + done.stderr
            self.codes[name] = done.returncode
            self.outputs[name] = _read_outputs(files["output"].read_text())
            self.summaries[name] = files["summary"].read_text()
            self.failed = self.failed or done.returncode != 0

    def action_outputs(self) -> dict[str, str]:
        return {name: self.render(spec["value"]) for name, spec in _action()["outputs"].items()}


def _read_outputs(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT's two forms: name=value, and name<<DELIMITER ... DELIMITER."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for item in lines:
                if item == delimiter:
                    break
                body.append(item)
            outputs[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def _runner(base: Path, **inputs: str) -> Runner:
    defaults = {name: spec.get("default", "") for name, spec in _action()["inputs"].items()}
    # The runner's environment, less what a runner sets per step; uv from a stand-in for setup-uv.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GITHUB_", "RUNNER_"))}
    return Runner(base, {**defaults, **inputs}, env)


def _setup_uv(runner: Runner, given: dict[str, str]) -> None:
    tools = runner.base / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "uv").symlink_to(Path(sys.executable).parent / "uv")
    runner.env["PATH"] = f"{tools}{os.pathsep}{runner.env['PATH']}"


def _cache(runner: Runner, given: dict[str, str]) -> None:
    Path(given["path"]).mkdir(parents=True, exist_ok=True)


def _upload(runner: Runner, given: dict[str, str]) -> None:
    assert Path(given["path"]).is_dir(), given


STAND_INS = {"astral-sh/setup-uv": _setup_uv, "actions/cache": _cache, "actions/upload-artifact": _upload}


def test_the_action_installs_soaks_0_19_0_and_reports_through_every_runner_file(tmp_path, release_cache):
    runner = _runner(
        tmp_path,
        releases="0.19.0",
        ws="wsproto",
        scenarios="hold-accept",
        duration="60s",
        users="30",
        args=FAST_ARGS,
        **{"python-version": sys.executable, "cache-dir": str(release_cache)},
    )
    runner.run(_action()["runs"]["steps"], STAND_INS)
    assert runner.codes["install"] == 0, runner.logs["install"]
    install = runner.outputs["install"]
    assert Path(install["bin"]).is_file() and install["version"] == __version__
    assert install["cache-dir"] == str(release_cache)
    # The soak ran and said what it found: outputs, step summary, report, JUnit.
    assert runner.codes["run"] == 0, runner.logs["run"]
    outputs = runner.action_outputs()
    report = Path(outputs["report-dir"])
    assert (outputs["verdict"], outputs["exit-code"]) == ("fail", "1"), runner.logs["run"]
    assert report == runner.temp / "handshake-chaos-report" and outputs["junit-xml"] == str(report / "junit.xml")
    summary = read_summary(report / "summary.json")
    assert signatures(summary).get(SIGNATURE_596, 0) > 0
    assert json.loads((runner.temp / "handshake-chaos-result.json").read_text()) == summary  # --json's stdout
    assert runner.summaries["run"] == (report / "report.md").read_text()
    assert junit_cases(read_junit(report / "junit.xml"))["errors: no handshake-time shutdown error"][0] == "failure"
    # The environments were cached, the report uploaded, and the job fails with the gate's code.
    assert runner.used["actions/cache"]["path"] == str(release_cache)
    assert runner.used["actions/cache"]["key"].startswith(f"handshake-chaos-envs-Linux-{sys.executable}-{__version__}-")
    assert runner.used["actions/upload-artifact"]["path"] == str(report)
    [gate] = [name for name in runner.codes if name not in ("install", "run")]
    assert runner.codes[gate] == 1 and "::error title=handshake-chaos::gate: fail (exit 1)" in runner.logs[gate]


def _fake_install(runner: Runner, exit_code: int) -> Path:
    """handshake-chaos stood in for by a script that records its arguments: the run step's own logic."""
    recorded = runner.base / "args.json"
    fake = runner.base / "handshake-chaos"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(recorded)!r}, 'w'))\nprint('{{}}')\nsys.exit({exit_code})\n"
    )
    fake.chmod(0o755)
    runner.outputs["install"] = {"bin": str(fake), "cache-dir": str(runner.base / "envs"), "version": __version__}
    return recorded


@pytest.mark.parametrize(
    ("inputs", "code", "expected", "verdict"),
    [
        (
            {"releases": "0.20.0", "baseline": "0.19.0", "ws": "wsproto websockets", "until-verdict": "false"},
            0,
            ["matrix", "--uvicorn", "0.19.0", "0.20.0", "--ws", "wsproto", "websockets", "--baseline-release", "0.19.0"]
            + ["--no-until-verdict"],
            "pass",
        ),
        (
            {"releases": "0.19.0", "scenarios": "hold-accept deny-close", "allowances": "handshake_dropped=5"},
            3,
            ["soak", "--uvicorn", "0.19.0", "--ws", "wsproto", "--mode", "worker-term"]
            + ["--scenario", "hold-accept", "deny-close", "--allow", "handshake_dropped=5", "--until-verdict"],
            "inconclusive",
        ),
        ({"releases": "0.19.0 0.20.0", "args": "--app svc:app --with starlette"}, 4, ["matrix", "--app"], "error"),
        ({"releases": "*", "command": "soak"}, 143, ["soak", "--uvicorn", "*"], "interrupted"),
    ],
)
def test_the_run_step_builds_the_command_from_the_inputs(tmp_path, inputs, code, expected, verdict):
    runner = _runner(tmp_path, **inputs)
    recorded = _fake_install(runner, code)
    [run_step] = [step for step in _action()["runs"]["steps"] if step.get("id") == "run"]
    runner.run([run_step], STAND_INS)
    assert runner.codes["run"] == 0, runner.logs["run"]
    args = json.loads(recorded.read_text())
    position = 0
    for item in expected:  # in this order, not necessarily adjacent
        position = args.index(item, position) + 1
    assert (runner.outputs["run"]["verdict"], runner.outputs["run"]["exit-code"]) == (verdict, str(code))
    assert "--json" in args and args[args.index("--junit-xml") + 1].endswith("/junit.xml")


def test_a_workflow_uses_the_action_as_another_repository_would():
    workflows = [yaml.safe_load(path.read_text()) for path in sorted(WORKFLOWS.glob("*.yml"))]
    uses = [
        step
        for workflow in workflows
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if step.get("uses") == "./"
    ]
    assert uses, "no workflow uses the action"
    inputs = _action()["inputs"]
    for step in uses:
        given = step.get("with", {})
        assert set(given) <= set(inputs), set(given) - set(inputs)
        assert all(name in given for name, spec in inputs.items() if spec.get("required"))
        assert all(re.fullmatch(r"\d+\.\d+\.\d+", release) for release in given["releases"].split())
