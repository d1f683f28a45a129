"""``handshake-chaos bisect`` as a maintainer runs it: real releases around known boundaries, and the commits
of a real git repository built from real source distributions (no clone from the internet)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chaos.commands.bisect import _notes
from chaos.commands.bisection import Search
from tests.helpers import CLI, FAST, SIGNATURE_596, read_summary, run_cli

DENIAL = "uvicorn_wsproto_close_during_denial_response"
# Quick verdicts: a pass settles once three signals caught three handshakes each.
EVIDENCE = ["--evidence-signals", "3", "--evidence-pending", "3"]


def _bisect(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "bisect", *args], cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})}
    )


def _steps(result: dict[str, Any], stage: str) -> list[tuple[str, str]]:
    search = result["releases"] if stage == "release" else result["commits"]
    return [(step["name"], step["outcome"]) for step in search["steps"]]


def _assert_steps_agree_with_their_soaks(result: dict[str, Any]) -> None:
    """Every attempt's verdict and errors are its soak's own summary's."""
    for search in (result["releases"], result["commits"] or {"steps": []}):
        for step in search["steps"]:
            for attempt in step["attempts"]:
                summary = read_summary(Path(attempt["report_dir"]) / "summary.json")
                assert attempt["verdict"] == summary["gate"]["verdict"], step["label"]
                counts = {f"{r['side']}:{r['signature']}": r["count"] for r in summary["errors"]}
                assert attempt["errors"] == counts and attempt["wall_seconds"] > 0
                assert summary["options"]["until_verdict"] is True  # each step stops once its verdict settles


def test_bisect_finds_the_release_that_fixed_596(tmp_path, release_cache):
    """--good is the newer end: the search runs toward the fix, and names it."""
    report = tmp_path / "report"
    step_summary = tmp_path / "step-summary.md"
    done = _bisect(
        ["--good", "0.20.0", "--bad", "0.19.0", "--signature", SIGNATURE_596, "--scenario", "hold-accept"]
        + ["--duration", "40s", "--users", "30", *FAST, "--report-dir", str(report), "--cache-dir", str(release_cache)]
        + ["--junit-xml", str(tmp_path / "junit.xml")],
        tmp_path,
        env={"GITHUB_STEP_SUMMARY": str(step_summary)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = f"first release where {SIGNATURE_596} is gone: 0.20.0 (last where it appears: 0.19.0)"
    assert done.stdout.startswith(f"handshake-chaos bisect: {line}\n"), done.stdout
    result = json.loads((report / "bisect.json").read_text())
    assert result["answer"] == line and result["exit_code"] == 0 and result["commits"] is None
    assert (result["releases"]["last"], result["releases"]["first"]) == ("0.19.0", "0.20.0")
    assert _steps(result, "release") == [("0.19.0", "appears"), ("0.20.0", "gone")]
    _assert_steps_agree_with_their_soaks(result)
    assert line in (report / "bisect.md").read_text() and line in step_summary.read_text()
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<testcase") == 3 and 'failures="0"' in junit
    # Progress while it ran: each step announced before its soak, and its result after.
    progress = [text for text in done.stderr.splitlines() if text.startswith("bisect: ")]
    assert progress[0].startswith("bisect: 2 releases from 0.19.0 to 0.20.0")
    assert "bisect: [release 0.19.0] soaking" in done.stderr and "bisect: [release 0.20.0] gone: " in done.stderr


def test_bisect_over_releases_then_the_commits_of_a_repository_built_from_sdists(tmp_path, release_cache):
    """The denial-response crash (wsproto, 0.25.0 to 0.54.x): three releases, then the commits between the
    boundary's tags in a repository made of the 0.53.0, 0.54.0 and 0.55.0 sdists, where 0.55.0's changes come
    in two commits: everything but wsproto_impl.py, then wsproto_impl.py. The second is the fix."""
    from tests.release_repo import WSPROTO_IMPL, release_repo

    repo = release_repo(tmp_path / "uvicorn", ["0.53.0", "0.54.0", "0.55.0"], split={"0.55.0": [WSPROTO_IMPL]})
    tags = {name: _git(repo, "rev-parse", f"{name}^{{commit}}") for name in ("0.54.0", "0.55.0")}
    report = tmp_path / "report"
    done = _bisect(
        ["--good", "0.55.0", "--bad", "0.53.0", "--repo", str(repo), "--signature", DENIAL, "--scenario", "deny-stream"]
        + ["--duration", "40s", "--users", "30", *FAST, *EVIDENCE, "--json"]
        + ["--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)  # --json: stdout is the result alone
    assert result == json.loads((report / "bisect.json").read_text())
    assert result["answer"] == f"first release where {DENIAL} is gone: 0.55.0 (last where it appears: 0.54.0)"
    assert _steps(result, "release") == [("0.53.0", "appears"), ("0.55.0", "gone"), ("0.54.0", "appears")]
    commits = result["commits"]
    [split] = [name for name in commits["candidates"] if name not in tags.values()]
    assert commits["candidates"] == [tags["0.54.0"], split, tags["0.55.0"]]
    assert _steps(result, "commit") == [(tags["0.54.0"], "appears"), (tags["0.55.0"], "gone"), (split, "appears")]
    assert (commits["last"], commits["first"]) == (split, tags["0.55.0"])
    assert result["commit_answer"].startswith(f"first commit where {DENIAL} is gone: {tags['0.55.0'][:12]} 0.55.0")
    assert f"last where it appears: {split[:12]}" in result["commit_answer"]
    # Every commit built as of one fixed moment: 0.55.0's publication, whatever the day the suite runs.
    assert result["commits_as_of"].startswith("2026-") and result["commits_as_of"].endswith("Z")
    _assert_steps_agree_with_their_soaks(result)
    for step in commits["steps"]:
        summary = read_summary(Path(step["attempts"][0]["report_dir"]) / "summary.json")
        assert summary["release"] == _git(repo, "describe", "--tags", "--always", step["name"])
    assert _git(repo, "status", "--porcelain") == "" and _git(repo, "worktree", "list").count("\n") == 0


def _git(repo: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *arguments], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_an_end_that_cannot_run_as_asked_ends_the_bisect_with_exit_4(tmp_path, release_cache):
    """Neither release has websockets-sansio: the oldest end is skipped, and there is nothing to bisect from."""
    report = tmp_path / "report"
    done = run_cli(
        ["bisect", "--good", "0.20.0", "--bad", "0.19.0", "--ws", "websockets-sansio", "--report-dir", str(report)]
        + ["--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    result = json.loads((report / "bisect.json").read_text())
    assert result["releases"]["status"] == "unmeasured" and _steps(result, "release") == [("0.19.0", "skipped")]
    assert "no answer: oldest end 0.19.0 skipped: cannot run here" in done.stdout and "websockets-sansio" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--good", "0.20.0"], "--bad is required"),
        (["--good", "0.20.0", "--bad", "0.20"], "the same release"),
        (["--good", "0.x", "--bad", "0.19.0"], "not a version"),
        (["--good", "0.20.0", "--bad", "0.19.0", "--signature", "no_such_signature"], "unknown signature"),
        (["--good", "0.20.0", "--bad", "0.19.0", "--retries", "-1"], "--retries: must be at least 0"),
        (["--good", "0.20.0", "--bad", "0.19.0", "--repo", "."], "not a git checkout"),
        (["--good", "0.20.0", "--bad", "0.19.0", "--scenario", "sideways"], "unknown scenario"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(tmp_path, args, message):
    done = run_cli(["bisect", *args, "--report-dir", str(tmp_path / "r")], tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("handshake-chaos:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()  # nothing started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--good", "99.0.0", "--bad", "0.19.0"], "--good 99.0.0: not a uvicorn release on the package index"),
        (["--good", "0.20.0", "--bad", "0.19.0", "--repo", "REPO"], "no tag 0.20.0 (or v0.20.0) for --good"),
    ],
)
def test_ends_the_index_or_the_repository_does_not_have_are_bad_usage(tmp_path, release_cache, args, message):
    repo = tmp_path / "untagged"
    repo.mkdir()
    _git(repo, "init", "--quiet")
    args = [str(repo) if arg == "REPO" else arg for arg in args]
    done = run_cli(["bisect", *args, "--report-dir", str(tmp_path / "r"), "--cache-dir", str(release_cache)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_ends_the_other_way_round_are_said_so():
    search = Search("release", ["0.19.0", "0.20.0"], ["0.19.0", "0.20.0"], "found", "", old_state="appears")
    search.new_state = "gone"
    [note] = _notes(search, good="0.19.0", bad="0.20.0", signature=SIGNATURE_596)
    assert note.startswith(f"--good 0.19.0 is where {SIGNATURE_596} appears and --bad 0.20.0 where it is gone")
    assert _notes(search, good="0.20.0", bad="0.19.0", signature=SIGNATURE_596) == []


def test_a_step_soaks_your_own_app_with_the_bisects_options(tmp_path):
    """--app, --with, --app-dir as in soak: every step is a soak of your app on that step's release."""
    from chaos.commands.bisect import BisectConfig, BisectSettings
    from chaos.commands.cli import build_parser
    from chaos.commands.soak import SoakConfig, SoakSettings
    from chaos.optionmodel import build
    from chaos.run.gate import GatePolicy
    from chaos.run.options import ChaosOptions

    values = vars(
        build_parser().parse_args(
            ["bisect", "--good", "0.20.0", "--bad", "0.19.0", "--app", "chatapp:app", "--app-dir", str(tmp_path)]
            + ["--with", "starlette", "--ws-path", "/ws/chat", "--scenario", "app", "--signature", SIGNATURE_596]
            + ["--mode", "master-hup", "--allow", "handshake_timeout=2", "--duration", "30s"]
        )
    )
    settings = build(BisectSettings, values, "bisect")
    template = SoakConfig(build(SoakSettings, values, "matrix"), build(ChaosOptions, values, "matrix"), tmp_path)
    step = BisectConfig(settings, template, tmp_path).step("0.19.0", tmp_path / "step")
    assert step.settings.uvicorn == "0.19.0" and step.settings.with_packages == ["starlette"]
    assert step.settings.duration == 30.0 and step.report_dir == tmp_path / "step"
    options = step.options
    assert (options.app, options.app_dir, options.ws_path) == ("chatapp:app", str(tmp_path), "/ws/chat")
    assert (options.ws, options.mode, options.scenarios, options.until_verdict) == (
        "wsproto",
        "master-hup",
        ["app"],
        True,
    )
    allow = GatePolicy.parse(options.allow.split(",")).allow
    assert allow["handshake_timeout"] == 2 and SIGNATURE_596 not in allow and "handshake_dropped" in allow
    step.validate()
