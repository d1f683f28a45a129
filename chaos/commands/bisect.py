"""``handshake-chaos bisect``: the release (and, with ``--repo``, the commit) where a signature appears or goes.

Each step is a soak that stops once its verdict settles (``--until-verdict``), of one released
version in its as-of-date environment, or of one commit's source tree from a local uvicorn checkout
(its dependencies resolved as of one fixed moment for every commit: the newer boundary release's
publication, unless ``--as-of`` says otherwise). The search itself is ``chaos.commands.bisection``;
this module runs its steps and writes what they found.

Exit codes: 0 a boundary was found (and the commit, with ``--repo``); 2 bad usage; 3 no boundary
(both ends agree), an ambiguous one (only skipped steps left around it) or an inconclusive end;
4 an end could not be built, booted or run with these options; 130 / 143 interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from packaging.version import Version

from chaos.commands.bisect_report import junit_xml, markdown, terminal
from chaos.commands.bisection import (
    Attempt,
    BisectResult,
    Search,
    StepRecord,
    answer,
    bisect,
    check_signature,
    followed,
    judge,
    release_candidates,
    state_phrase,
    steps_left,
    tolerated,
)
from chaos.commands.soak import SoakConfig, SoakSettings, prepare, run_soak
from chaos.commands.stopping import Interrupted, StopFlag
from chaos.deployment import git_history
from chaos.deployment.environments import default_cache_dir, parse_version, published_versions
from chaos.errors import ChaosError, UsageError
from chaos.optionmodel import add_command, build, option
from chaos.results import (
    DEFAULT_MODE,
    DEFAULT_SERVER,
    MODES,
    SCENARIOS,
    SERVER_FAMILIES,
    WS_CHOICES,
    ExitCode,
    Mode,
    Scenario,
    ServerFamily,
)
from chaos.run.options import ChaosOptions

_BISECT = frozenset({"bisect"})
# The soak options a bisect shares with matrix (each step is a soak of one release); the release, its
# ws implementation, mode, server and scenarios are the bisect's own (BisectSettings).
_SHARED = "matrix"


@dataclass(frozen=True)
class BisectSettings:
    good: str = option(
        "",
        "--good",
        "the end without the signature (a release, or 'latest')",
        required=True,
        entry_points=_BISECT,
        group="deployment",
    )
    bad: str = option(
        "",
        "--bad",
        "the end with it: older than --good for a fix, newer for a regression",
        required=True,
        entry_points=_BISECT,
        group="deployment",
    )
    signature: str | None = option(
        None,
        "--signature",
        "the signature to follow (none: any handshake-time error, the gate's fail); the others are tolerated",
        entry_points=_BISECT,
        group="gate",
    )
    retries: int = option(
        2,
        "--retries",
        "times an inconclusive step is soaked again before it is skipped",
        minimum=0,
        maximum=20,
        entry_points=_BISECT,
        group="gate",
    )
    include_prereleases: bool = option(
        False, "--include-prereleases", "bisect over pre-releases too", entry_points=_BISECT, group="deployment"
    )
    repo: str | None = option(
        None,
        "--repo",
        "a local uvicorn git checkout: then bisect its commits between the two boundary releases' tags",
        entry_points=_BISECT,
        group="deployment",
    )
    ws: str = option(
        "wsproto",
        "--ws",
        "uvicorn ws implementation",
        choices=WS_CHOICES,
        what="implementation",
        choices_named="uvicorn's ws implementations are",
        entry_points=_BISECT,
        group="deployment",
    )
    mode: Mode = option(
        DEFAULT_MODE, "--mode", "chaos mode", choices=MODES, what="mode", entry_points=_BISECT, group="signals"
    )
    server: ServerFamily = option(
        DEFAULT_SERVER,
        "--server",
        "server family",
        choices=SERVER_FAMILIES,
        what="server",
        entry_points=_BISECT,
        group="deployment",
    )
    scenarios: list[Scenario] = option(
        [],
        "--scenario",
        "handshake states, mixed (none given: every one that applies to each step's release)",
        choices=SCENARIOS,
        what="scenario",
        entry_points=_BISECT,
        group="load",
    )
    json: bool = option(
        False, "--json", "print bisect.json on stdout (progress stays on stderr)", entry_points=_BISECT, group="output"
    )
    junit_xml: str | None = option(
        None,
        "--junit-xml",
        "write a JUnit XML report: one test case per step, and the boundary",
        entry_points=_BISECT,
        group="output",
    )


@dataclass(frozen=True)
class BisectConfig:
    bisect: BisectSettings
    soak: SoakConfig  # the template of every step (its release filled in per step)
    report_dir: Path

    def validate(self) -> None:
        settings = self.bisect
        for flag, end in (("--good", settings.good), ("--bad", settings.bad)):
            if end != "latest":
                parse_version(end, flag)
        if settings.good == settings.bad or (
            "latest" not in (settings.good, settings.bad) and Version(settings.good) == Version(settings.bad)
        ):
            raise UsageError("--good and --bad are the same release: give two ends")
        if settings.signature is not None:
            check_signature(settings.signature)
        if settings.repo is not None:
            git_history.check_repo(Path(settings.repo))
        if settings.junit_xml is not None and Path(settings.junit_xml).is_dir():
            raise UsageError(f"--junit-xml {settings.junit_xml} is a directory")
        self.step(settings.good, self.report_dir / "releases").validate()

    def step(
        self, uvicorn: str, report_dir: Path, *, as_of: str | None = None, release: str | None = None
    ) -> SoakConfig:
        """One step's soak: the release (or source tree), with the bisect's ws, mode, server, scenarios."""
        settings = self.bisect
        allow = self.soak.options.allow
        if settings.signature is not None:
            allow = ",".join([*tolerated(settings.signature), *filter(None, [allow])])
        options = dataclasses.replace(
            self.soak.options,
            ws=settings.ws,
            mode=settings.mode,
            server=settings.server,
            scenarios=list(settings.scenarios),
            allow=allow,
            release=release,
        )
        soak_settings = dataclasses.replace(
            self.soak.settings, uvicorn=uvicorn, as_of=as_of or self.soak.settings.as_of
        )
        return SoakConfig(soak_settings, options, report_dir)


# Each options class of the command, with the entry point its options are read for.
OPTION_CLASSES: tuple[tuple[type, str], ...] = (
    (BisectSettings, "bisect"),
    (SoakSettings, _SHARED),
    (ChaosOptions, _SHARED),
)


def add_parser(subparsers: Any) -> None:
    """``handshake-chaos bisect``'s parser, under the command's subparsers."""
    add_command(
        subparsers,
        "bisect",
        "find the release (and, with --repo, the commit) where a signature appears or goes",
        OPTION_CLASSES,
    )


def run_bisect_command(values: dict[str, Any]) -> int:
    settings = build(BisectSettings, values, "bisect")
    soak_settings = build(SoakSettings, values, _SHARED)
    options = build(ChaosOptions, values, _SHARED)
    name = f"{settings.good}-{settings.bad}-{settings.ws}"
    report_dir = Path(soak_settings.report_dir or f"reports/bisect-{name}")
    config = BisectConfig(settings, SoakConfig(soak_settings, options, report_dir), report_dir)
    result = run_bisect(config, stop=StopFlag().install())
    print(result.dumps() if settings.json else terminal(result), end="" if settings.json else "\n", flush=True)
    if not settings.json:
        print(f"report: {report_dir}/bisect.md, bisect.json", flush=True)
    return result.exit_code


def _progress(line: str) -> None:
    print(f"bisect: {line}", file=sys.stderr, flush=True)


class _Steps:
    """Runs the steps of one stage: each a soak, judged against the followed signature."""

    def __init__(self, config: BisectConfig, stop: StopFlag, stage: str, source_tree: bool) -> None:
        self.config = config
        self.stop = stop
        self.stage = stage
        signature = config.bisect.signature
        self.names = followed(signature, source_tree) if signature else frozenset()

    def attempt(self, label: str, number: int, make: Callable[[Path], SoakConfig], report_dir: Path) -> Attempt:
        if self.stop.signum is not None:
            return Attempt("interrupted", "interrupted", "stopped before this step")
        retries = self.config.bisect.retries
        tries = f" (try {number + 1} of {retries + 1}: the last was inconclusive)" if number else ""
        cap = self.config.soak.settings.duration
        _progress(f"[{self.stage} {label}] soaking until its verdict settles (at most {cap:g}s){tries}...")
        started = time.monotonic()
        where = report_dir if number == 0 else report_dir.with_name(f"{report_dir.name}-try{number + 1}")

        def took() -> float:
            return round(time.monotonic() - started, 1)

        try:
            soak = make(where)
            prepared = prepare(soak)
        except UsageError as exc:
            return Attempt("error", "skipped", f"cannot run here: {exc}", took())
        except ChaosError as exc:
            return Attempt("error", "error", f"could not build: {exc}", took())
        try:
            summary = run_soak(soak, prepared, quiet=True, stop=self.stop)
        except Interrupted:
            return Attempt("interrupted", "interrupted", "stopped before the soak started", took())
        except ChaosError as exc:
            return Attempt("error", "error", f"could not run: {exc}", took())
        outcome, evidence = judge(summary, self.config.bisect.signature, self.names, soak.options.evidence_policy())
        if self.stop.signum is not None:
            outcome, evidence = "interrupted", f"stopped by a signal; so far: {evidence}"
        return Attempt(outcome, summary.gate.verdict, evidence, took(), str(where), summary.error_counts())

    def announce(self, step: StepRecord, untested: int) -> None:
        shown = step.outcome if step.outcome != "skipped" else "skipped"
        _progress(f"[{self.stage} {step.label}] {shown}: {step.reason} ({step.wall_seconds:.0f}s)")
        if step.outcome != "interrupted":
            steps = steps_left(untested)
            _progress(
                f"{untested} {self.stage}{'' if untested == 1 else 's'} left to test "
                f"(roughly {steps} step{'' if steps == 1 else 's'})"
            )


def _resolve_end(end: str, published: dict[str, Any], flag: str) -> str:
    if end == "latest":
        return max((v for v in published if not Version(v).is_prerelease), key=Version)
    matches = [v for v in published if Version(v) == Version(end)]
    if not matches:
        raise UsageError(f"{flag} {end}: not a uvicorn release on the package index (yanked ones are left out)")
    return matches[0]


def run_bisect(config: BisectConfig, stop: StopFlag | None = None) -> BisectResult:
    """Bisects the releases, then (with ``--repo``) the commits between the boundary's two tags."""
    stop = stop or StopFlag()
    started = time.monotonic()
    settings = config.bisect
    config.validate()
    published = published_versions("uvicorn")
    good = _resolve_end(settings.good, published, "--good")
    bad = _resolve_end(settings.bad, published, "--bad")
    repo = git_history.check_repo(Path(settings.repo)) if settings.repo else None
    if repo is not None:
        for flag, end in (("--good", good), ("--bad", bad)):
            if git_history.release_tag(repo, end) is None:
                raise UsageError(f"--repo {settings.repo}: no tag {end} (or v{end}) for {flag}")
    candidates = release_candidates(published, (good, bad), settings.include_prereleases)
    followed_text = settings.signature or "any handshake-time error"
    scenarios = ",".join(settings.scenarios) or "every scenario that applies"
    _progress(
        f"{len(candidates)} releases from {candidates[0]} to {candidates[-1]} ({settings.ws}, {settings.mode}, "
        f"{settings.server}, {scenarios}), following {followed_text}; "
        f"roughly {2 + steps_left(len(candidates) - 2)} steps"
    )
    config.report_dir.mkdir(parents=True, exist_ok=True)
    for previous in ("releases", "commits"):  # a previous bisect's steps: never read as this one's
        shutil.rmtree(config.report_dir / previous, ignore_errors=True)
    releases_dir = config.report_dir / "releases"
    steps = _Steps(config, stop, "release", source_tree=False)

    def measure_release(index: int, number: int) -> Attempt:
        version = candidates[index]
        return steps.attempt(version, number, lambda where: config.step(version, where), releases_dir / version)

    releases = bisect("release", candidates, measure_release, retries=settings.retries, announce=steps.announce)
    notes = _notes(releases, good, bad, settings.signature)
    result = BisectResult(
        signature=settings.signature,
        good=good,
        bad=bad,
        ws=settings.ws,
        mode=settings.mode,
        server=settings.server,
        scenarios=list(settings.scenarios),
        app=config.soak.options.app,
        retries=settings.retries,
        releases=releases,
        answer=answer(releases, settings.signature),
        exit_code=releases.exit_code(),
        repo=str(repo) if repo else None,
        notes=notes,
    )
    if repo is not None:
        if releases.status == "found":
            _bisect_commits(config, result, repo, published, stop)
        else:
            result.notes.append("the commits were not bisected: the releases gave no single boundary")
    if stop.signum is not None:
        result.exit_code = ExitCode.of_signal(stop.signum)
    result.wall_seconds = round(time.monotonic() - started, 1)
    _write(result, config)
    return result


def _notes(releases: Search, good: str, bad: str, signature: str | None) -> list[str]:
    """Said when the measured ends are the other way round from --good and --bad."""
    states = {releases.candidates[0]: releases.old_state, releases.candidates[-1]: releases.new_state}
    if states.get(good) == "appears" and states.get(bad) == "gone":
        return [
            f"--good {good} is where {state_phrase('appears', signature)} and --bad {bad} where "
            f"{state_phrase('gone', signature, pronoun=True)}: the ends are the other way round (the boundary "
            "below is where it changes all the same)"
        ]
    return []


def _bisect_commits(
    config: BisectConfig, result: BisectResult, repo: Path, published: dict[str, Any], stop: StopFlag
) -> None:
    releases = result.releases
    assert releases.last is not None and releases.first is not None
    older, newer = sorted((releases.last, releases.first), key=Version)
    as_of = config.soak.settings.as_of or (published[newer] + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result.commits_as_of = as_of
    try:
        old_sha, new_sha = git_history.release_tag(repo, older), git_history.release_tag(repo, newer)
        if old_sha is None or new_sha is None:
            missing = older if old_sha is None else newer
            raise UsageError(f"no tag {missing} (or v{missing}) in {repo}")
        history = git_history.commits_between(repo, old_sha, new_sha)
    except ChaosError as exc:
        search = Search("commit", [], [], "unmeasured", str(exc))
        result.commits, result.commit_answer = search, answer(search, result.signature, "commit")
        result.exit_code = search.exit_code()
        return
    _progress(f"{len(history)} commits from {older} to {newer}, each built as of {as_of}")
    sources = (config.soak.cache_dir or default_cache_dir()) / "sources"
    commits_dir = config.report_dir / "commits"
    steps = _Steps(config, stop, "commit", source_tree=True)

    def measure_commit(index: int, number: int) -> Attempt:
        item = history[index]

        def make(where: Path) -> SoakConfig:
            tree = git_history.source_tree(repo, item, sources)
            return config.step(str(tree), where, as_of=as_of, release=item.describe)

        return steps.attempt(item.label, number, make, commits_dir / item.sha[:12])

    search = bisect(
        "commit",
        [item.sha for item in history],
        measure_commit,
        retries=config.bisect.retries,
        labels=[f"{item.sha[:12]} {item.label}" for item in history],
        announce=steps.announce,
    )
    result.commits = search
    result.commit_answer = answer(search, result.signature, "commit")
    result.exit_code = search.exit_code()


def _write(result: BisectResult, config: BisectConfig) -> None:
    report = config.report_dir
    result.write(report / "bisect.json")
    text = markdown(result)
    (report / "bisect.md").write_text(text)
    if config.bisect.junit_xml is not None:
        path = Path(config.bisect.junit_xml)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(junit_xml(result))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as step_summary:
            step_summary.write(text + "\n")
