"""``handshake-chaos soak``: the pre-release soak test of one release.

Builds (or reuses) the release's environment, runs Locust headless on the packaged
locustfile with the run's options forwarded, and learns what it does from one channel: the
events it appends to ``events.jsonl`` (``chaos.report.events``), which give the progress
lines, the first-seen lines and the summary. Writes the report directory, ``summary.json``
once. Exits with the gate's code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.commands.stopping import Interrupted, StopFlag
from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.deployment.families import family
from chaos.deployment.launcher import PROBE_WS_PATH, check_ws_available, read_versions
from chaos.deployment.processes import die_with_parent
from chaos.errors import ChaosError, DeploymentError, UsageError
from chaos.optionmodel import changed_args, declared, option
from chaos.report.events import EVENTS_FILE, EventReader
from chaos.report.files import compress_logs, write_markdown_report
from chaos.report.page import write_soak_page
from chaos.report.text import format_summary
from chaos.results import (
    ExitCode,
    FirstSeen,
    Progress,
    RunEvent,
    RunFinished,
    RunStarted,
    RunSummary,
    SignalsSummary,
    SoakRun,
    TargetSummary,
)
from chaos.run.gate import interrupted, verdict
from chaos.run.options import ChaosOptions
from chaos.scenarios import plan_scenarios

log = logging.getLogger(__name__)

_PROGRESS_SECONDS = 5.0
_OVERRUN_SECONDS = 300.0  # past --duration before Locust is told to stop
_STOP_SECONDS = 120.0  # for Locust to stop everything and write its summary once told
_SOAK_AND_MATRIX = frozenset({"soak", "matrix"})
# The gate's own stop timeout for Locust's users, then margin for the report.
_LOCUST_STOP_TIMEOUT = 10


def locustfile() -> Path:
    """The packaged locustfile: the same plugin ``locustfiles/handshake.py`` loads in a checkout."""
    return Path(str(importlib.resources.files("chaos.locust_plugin") / "locustfile.py"))


@dataclass(frozen=True)
class SoakSettings:
    """What a soak adds to the run's options: the release to build, and how long and hard to load it."""

    uvicorn: str | None = option(
        None,
        "--uvicorn",
        "uvicorn version, 'latest', a wheel or a source checkout (none: this interpreter's uvicorn)",
        scope="process",
        entry_points=frozenset({"soak"}),
        group="deployment",
    )
    duration: float = option(
        60.0,
        "--duration",
        "run time of each soak (e.g. 45s, 10m)",
        duration=True,
        positive=True,
        entry_points=_SOAK_AND_MATRIX,
        group="load",
    )
    users: int = option(100, "--users", "Locust users", minimum=1, entry_points=_SOAK_AND_MATRIX, group="load")
    spawn_rate: float = option(
        50.0,
        "--spawn-rate",
        "users started per second",
        positive=True,
        entry_points=_SOAK_AND_MATRIX,
        group="load",
    )
    processes: int | None = option(
        None,
        "--processes",
        "Locust worker processes (Locust's --processes)",
        minimum=1,
        entry_points=_SOAK_AND_MATRIX,
        group="load",
    )
    report_dir: str | None = option(
        None,
        "--report-dir",
        "where reports go (default: reports/...)",
        entry_points=_SOAK_AND_MATRIX,
        group="output",
    )
    gunicorn: str | None = option(
        None,
        "--gunicorn",
        "pin gunicorn instead of the release's contemporary",
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )
    ws_version: str | None = option(
        None,
        "--ws-version",
        "pin the ws library (websockets or wsproto)",
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )
    constraint: str | None = option(
        None,
        "--constraint",
        "pip constraints file for the environment",
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )
    as_of: str | None = option(
        None,
        "--as-of",
        "resolve dependencies as of this date instead",
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )
    with_packages: list[str] = option(
        [],
        "--with",
        "a requirement of your app (e.g. starlette) installed into the release's environment; repeatable",
        repeatable=True,
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )
    with_requirements: str | None = option(
        None,
        "--with-requirements",
        "a requirements file of your app, installed likewise",
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )
    with_as_of: str | None = option(
        None,
        "--with-as-of",
        "resolve the --with requirements as of this date (default: the release's date)",
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )
    cache_dir: str | None = option(
        None,
        "--cache-dir",
        "where release environments are kept",
        entry_points=_SOAK_AND_MATRIX,
        group="deployment",
    )


@dataclass(frozen=True)
class SoakConfig:
    settings: SoakSettings
    options: ChaosOptions
    report_dir: Path

    def validate(self) -> None:
        if self.settings.uvicorn is not None and self.options.target_python is not None:
            raise UsageError("give --uvicorn (build that release) or --target-python (use that interpreter), not both")
        self.options.validate(host=None)
        usable_directory(self.report_dir, "--report-dir")
        if self.settings.cache_dir is not None:
            usable_directory(Path(self.settings.cache_dir), "--cache-dir")
        if self.settings.constraint is not None and not Path(self.settings.constraint).is_file():
            raise UsageError(f"--constraint: no such file {self.settings.constraint}")
        if not locustfile().is_file():
            raise UsageError(f"the packaged locustfile is missing at {locustfile()}: reinstall handshake-chaos")
        if self.settings.uvicorn is not None:
            self.release_spec().validate()
        elif self.settings.with_packages or self.settings.with_requirements:
            raise UsageError("--with and --with-requirements install into a release's environment: give --uvicorn")

    def release_spec(self) -> ReleaseSpec:
        assert self.settings.uvicorn is not None
        return ReleaseSpec(
            uvicorn=self.settings.uvicorn,
            as_of=self.settings.as_of,
            gunicorn=self.settings.gunicorn,
            ws_version=self.settings.ws_version,
            ws_library="wsproto" if self.options.ws == "wsproto" else "websockets",
            constraint=self.settings.constraint,
            with_packages=tuple(self.settings.with_packages),
            with_requirements=self.settings.with_requirements,
            with_as_of=self.settings.with_as_of,
        )

    @property
    def cache_dir(self) -> Path | None:
        return Path(self.settings.cache_dir) if self.settings.cache_dir else None


def usable_directory(path: Path, flag: str) -> None:
    """A directory that exists, or can be created, and can be written: checked before anything runs."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or str(probe).startswith(("/proc", "/sys")):
        raise UsageError(f"{flag} {path}: {probe} cannot be written")


@dataclass(frozen=True)
class Prepared:
    """A release ready to soak: its interpreter, versions and label (resolved once)."""

    python: str
    versions: dict[str, Any]
    release: str


def prepare(config: SoakConfig) -> Prepared:
    """Validates, then builds or reuses the environment; raises before anything runs."""
    config.validate()
    if config.settings.uvicorn is not None:
        environment = build_environment(config.release_spec(), config.cache_dir)
        python = environment.python
        log.info("%s environment %s", "reusing" if environment.reused else "built", environment.path)
    else:
        python = config.options.target_python or sys.executable
    versions = read_versions(python)
    family(config.options.server).check_release(versions)
    check_ws_available(config.options.ws, versions)
    options = config.options
    # The scenarios asked for must be able to happen in this release (exit 2, or a skipped matrix cell).
    plan_scenarios(
        options.scenarios,
        versions=versions,
        ws=options.ws,
        own_ws=family(options.server).own_ws,
        tls=options.tls,
        probe_route=options.ws_path == PROBE_WS_PATH,
    )
    return Prepared(python, versions, config.options.release or str(versions["uvicorn"]))


def locust_options(config: SoakConfig, prepared: Prepared) -> ChaosOptions:
    """The run's options as the Locust process gets them."""
    report = config.report_dir
    return dataclasses.replace(
        config.options,
        target_python=prepared.python,
        release=prepared.release,
        run_dir=str(report / "server"),
        # The Locust process tells its run here; summary.json is this process's to write, once.
        events_file=str(report / EVENTS_FILE),
        report_json=None,
        gate=True,
    )


# Locust as the soak runs it: sealed from the caller's Locust configuration (chaos.locust_plugin.main).
SEALED_LOCUST = ["-m", "chaos.locust_plugin.main", "--sealed"]


def locust_command(config: SoakConfig, prepared: Prepared) -> list[str]:
    settings, report = config.settings, config.report_dir
    command = [sys.executable, *SEALED_LOCUST, "-f", str(locustfile()), "--headless"]
    # The soak's own console shows the progress (events.jsonl): Locust's periodic stats tables would
    # only grow locust.log (megabytes an hour); its final summary stays.
    command += ["--only-summary"]
    command += ["-u", str(settings.users), "-r", f"{settings.spawn_rate:g}", "-t", f"{settings.duration:g}s"]
    command += ["--stop-timeout", str(_LOCUST_STOP_TIMEOUT)]
    command += ["--csv", str(report / "locust"), "--html", str(report / "locust.html")]
    if settings.processes is not None:
        command += ["--processes", str(settings.processes)]
    return command + changed_args(locust_options(config, prepared), "locust")


# Of the caller's environment, what the Locust process must not see: the run's own outputs are the soak's
# to write (the step summary gets the soak's report once, not its Locust's too).
_NOT_FOR_LOCUST = frozenset({"GITHUB_STEP_SUMMARY"})


def _locust_environment() -> dict[str, str]:
    """This environment without the option env vars (their values are on the command line already), without
    any ``LOCUST_*`` variable (the soak's Locust reads no configuration but what the soak gives it), and
    without the CI outputs the soak itself writes."""
    option_vars = {name for cls in (ChaosOptions, SoakSettings) for item in declared(cls) for name in item.env_vars}
    return {
        key: value
        for key, value in os.environ.items()
        if key not in option_vars and key not in _NOT_FOR_LOCUST and not key.startswith("LOCUST_")
    }


def run_soak(
    config: SoakConfig, prepared: Prepared | None = None, quiet: bool = False, stop: StopFlag | None = None
) -> RunSummary:
    """Runs one soak; returns its summary (``summary.gate.exit_code`` is the exit code).

    ``stop`` set by a signal ends the run early: the Locust process is sent the same signal once
    and stops its users, the controller and the deployment in that order and writes the summary
    (verdict ``interrupted``, or ``fail`` if errors were found); further signals only wait for it.
    """
    stop = stop or StopFlag()
    try:
        prepared = prepared or prepare(config)
    except ChaosError:
        if stop.signum is not None:  # the signal reached the build too
            raise Interrupted(stop.signum) from None
        raise
    if stop.signum is not None:
        raise Interrupted(stop.signum)
    if config.options.metrics_port == 0:
        # Any free port, but a known one: it is forwarded to Locust and named in the summary.
        port = _free_port(config.options.metrics_host)
        config = dataclasses.replace(config, options=dataclasses.replace(config.options, metrics_port=port))
    report = config.report_dir
    try:
        if report.exists():
            shutil.rmtree(report / "server", ignore_errors=True)
            (report / "summary.json").unlink(missing_ok=True)
            (report / EVENTS_FILE).unlink(missing_ok=True)  # a previous run's: never read as this one's
        report.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use report directory {report}: {exc.strerror or exc}") from None
    command = locust_command(config, prepared)
    (report / "command.txt").write_text(" ".join(command) + "\n")
    started = time.monotonic()
    events = _RunEvents(EventReader(report / EVENTS_FILE), started, config.settings.duration, quiet)
    with open(report / "locust.log", "w") as output:
        # Its own session: a Ctrl-C in the terminal reaches only us, and we forward one.
        locust = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env=_locust_environment(),
        )
        try:
            _watch(locust, config, started, stop, events)
        finally:
            _reap(locust)
    events.poll()
    if events.summary is not None:
        summary = events.summary
    else:
        summary = _error_summary(
            config, prepared, events.started, locust.returncode, report / "locust.log", stop.signum
        )
    summary.soak = SoakRun(round(time.monotonic() - started, 1), locust.returncode, command)
    # The deployment has stopped: its logs are kept whole, compressed (a failing hour is megabytes, not hundreds).
    compress_logs(report / "server")
    summary.write(report / "summary.json")
    write_markdown_report(summary, report / "report.md")
    write_soak_page(summary, report / "report.html")
    if not quiet:
        print(format_summary(summary), flush=True)
        print(f"report: {report}/", flush=True)
    return summary


def _watch(
    locust: subprocess.Popen[bytes], config: SoakConfig, started: float, stop: StopFlag, events: _RunEvents
) -> None:
    # Bounded: Locust stops itself at --duration; this only waits past it with a margin.
    deadline = started + config.settings.duration + _OVERRUN_SECONDS
    forwarded = False
    while locust.poll() is None:
        events.poll()
        now = time.monotonic()
        if stop.signum is not None and not forwarded:
            forwarded = True
            events.progress_lines = False  # what the counts do from here on is the stop's
            deadline = min(deadline, now + _STOP_SECONDS)
            name = signal.Signals(stop.signum).name
            print(f"stopping on {name}: Locust stops its users, the controller, the deployment...", file=sys.stderr)
            _send(locust, stop.signum)
        if now > deadline:
            log.error("locust did not stop in time; stopping it")
            _send(locust, signal.SIGINT if not forwarded else signal.SIGKILL)
            forwarded = True
            deadline = now + _STOP_SECONDS
        time.sleep(0.2)


def _send(locust: subprocess.Popen[bytes], signum: int) -> None:
    # Locust runs in its own process group: the group holds what it started that is not yet reparented.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(locust.pid, signum) if signum == signal.SIGKILL else locust.send_signal(signum)


def _reap(locust: subprocess.Popen[bytes]) -> None:
    """Locust has exited or must: never leave it (or its process group) behind."""
    try:
        locust.wait(timeout=_STOP_SECONDS if locust.poll() is None else 0)
    except subprocess.TimeoutExpired:
        _send(locust, signal.SIGKILL)
        locust.wait()


class _RunEvents:
    """What the Locust process has told of its run so far (its events file), echoed to this console."""

    def __init__(self, reader: EventReader, started: float, duration: float, quiet: bool) -> None:
        self.reader = reader
        self.since = started  # this process's clock when Locust started
        self.duration = duration
        self.quiet = quiet
        self.progress_lines = not quiet
        self.started: RunStarted | None = None
        self.summary: RunSummary | None = None
        self._next_starting = started + _PROGRESS_SECONDS

    def poll(self) -> None:
        for event in self.reader.read():
            self._take(event)
        now = time.monotonic()
        if self.started is None and self.progress_lines and now >= self._next_starting:
            self._next_starting += _PROGRESS_SECONDS
            self._progress(None, now)

    def _take(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.started = event
        elif isinstance(event, RunFinished):
            self.summary = event.summary
        elif isinstance(event, FirstSeen) and not self.quiet:
            print(f"  handshake-chaos: {event.line()}", file=sys.stderr, flush=True)
        elif isinstance(event, Progress) and self.progress_lines:
            self._progress(event, time.monotonic())

    def _progress(self, progress: Progress | None, now: float) -> None:
        elapsed = now - self.since
        counts = f": {progress.counts()}" if progress is not None else " (starting)"
        left = max(0.0, self.duration - elapsed)
        print(f"  {elapsed:5.0f}s elapsed, {left:5.0f}s left{counts}", file=sys.stderr, flush=True)


def _error_summary(
    config: SoakConfig,
    prepared: Prepared,
    started: RunStarted | None,
    code: int | None,
    log_path: Path,
    interrupted_by: int | None,
) -> RunSummary:
    """Locust stopped before its summary event: the target or the run could not start, or a signal came first.

    What the run was comes from its ``started`` event when it got that far, else from this soak's own options."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if "handshake-chaos:" in line]
    reason = lines[-1].split("handshake-chaos:", 1)[-1].strip() if lines else f"locust exited with code {code}"
    if interrupted_by is not None:
        gate = interrupted(interrupted_by)
    else:
        gate = verdict("error", reason, exit_code=code if code in (ExitCode.USAGE, ExitCode.NOT_STARTED) else None)
    options = config.options
    # Without its started event, the run is what this soak asked for: its own options, never defaults.
    labels = started or RunStarted(
        release=prepared.release,
        ws=family(options.server).ws_label(options.ws),
        mode=options.mode,
        server=options.server,
        metrics_url=None,
        target_url=None,
        time=0.0,
        versions=prepared.versions,
    )
    return RunSummary(
        release=labels.release,
        ws=labels.ws,
        mode=labels.mode,
        server=labels.server,
        versions=labels.versions or prepared.versions,
        gate=gate,
        errors=[],
        signals=SignalsSummary(),
        outcomes={},
        target=TargetSummary(url=labels.target_url, embedded=True),
        metrics_url=labels.metrics_url,
        started=labels.time,
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def soak_exit_code(summary: RunSummary) -> int:
    code = summary.gate.exit_code
    if code not in set(ExitCode):
        raise DeploymentError(f"unexpected gate exit code {code}")
    return code
