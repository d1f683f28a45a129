"""``handshake-chaos soak``: the pre-release soak test of one release.

Builds (or reuses) the release's environment, runs Locust headless on the locustfile
with the rolling TERMs and the detection, shows progress from its own ``/metrics``,
and writes the report directory. Exits with the gate's code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from chaos.environments import ReleaseSpec, build_environment
from chaos.errors import TargetError, UsageError
from chaos.gate import ERROR, EXIT_CODES
from chaos.launcher import WS_IMPLEMENTATIONS, read_versions
from chaos.report import format_summary
from chaos.reportfiles import write_markdown_report

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfiles" / "handshake.py"
_PROGRESS_SECONDS = 5.0


@dataclass(frozen=True)
class SoakConfig:
    uvicorn: str | None
    ws: str = "wsproto"
    duration: float = 60.0
    users: int = 100
    spawn_rate: float = 50.0
    report_dir: Path = Path("reports/soak")
    release: str | None = None
    app: str | None = None
    target_python: str | None = None
    gunicorn: str | None = None
    ws_version: str | None = None
    constraint: str | None = None
    as_of: str | None = None
    metrics_port: int = 9646
    metrics_host: str = "127.0.0.1"
    workers: int = 2
    hold_seconds: float = 2.0
    keep_open_seconds: float = 1.0
    term_interval: float = 3.0
    term_jitter: float = 1.0
    allow: str = ""
    http_rejection_is_error: bool = False
    cache_dir: Path | None = None
    extra_locust_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        if self.ws not in WS_IMPLEMENTATIONS:
            raise UsageError(f"--ws: unknown implementation {self.ws!r} (choose from {', '.join(WS_IMPLEMENTATIONS)})")
        if self.duration <= 0:
            raise UsageError("--duration must be positive")
        if self.users < 1 or self.spawn_rate <= 0:
            raise UsageError("--users must be at least 1 and --spawn-rate positive")
        if self.uvicorn is not None and self.target_python is not None:
            raise UsageError("give --uvicorn (build that release) or --target-python (use that interpreter), not both")
        if self.app is not None and ":" not in self.app:
            raise UsageError(f"--app must look like module:attribute, got {self.app!r}")
        if not LOCUSTFILE.is_file():
            raise UsageError(f"locustfile not found at {LOCUSTFILE}: run handshake-chaos from its checkout")

    def release_spec(self) -> ReleaseSpec:
        assert self.uvicorn is not None
        return ReleaseSpec(
            uvicorn=self.uvicorn,
            as_of=self.as_of,
            gunicorn=self.gunicorn,
            ws_version=self.ws_version,
            ws_library="wsproto" if self.ws == "wsproto" else "websockets",
            constraint=self.constraint,
        )


@dataclass(frozen=True)
class Prepared:
    python: str
    versions: dict[str, Any]
    release: str


def prepare(config: SoakConfig) -> Prepared:
    """Validates, then builds or reuses the environment; raises before anything runs."""
    config.validate()
    if config.uvicorn is not None:
        config.release_spec().validate()
        environment = build_environment(config.release_spec(), config.cache_dir)
        python = environment.python
        log.info("%s environment %s", "reusing" if environment.reused else "built", environment.path)
    else:
        python = config.target_python or sys.executable
    versions = read_versions(python)
    if config.ws != "auto" and config.ws not in versions["ws_implementations"]:
        raise UsageError(
            f"uvicorn {versions['uvicorn']} has no ws implementation {config.ws!r} "
            f"(it has: {', '.join(i for i in versions['ws_implementations'] if i != 'auto')})"
        )
    return Prepared(python, versions, config.release or str(versions["uvicorn"]))


def locust_command(config: SoakConfig, prepared: Prepared) -> list[str]:
    report = config.report_dir
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    command += ["-u", str(config.users), "-r", f"{config.spawn_rate:g}", "-t", f"{config.duration:g}s"]
    command += ["--stop-timeout", "10", "--csv", str(report / "locust"), "--html", str(report / "locust.html")]
    command += ["--target-python", prepared.python, "--ws", config.ws, "--workers", str(config.workers)]
    command += ["--hold-seconds", f"{config.hold_seconds:g}", "--keep-open-seconds", f"{config.keep_open_seconds:g}"]
    command += ["--term-interval", f"{config.term_interval:g}"]
    command += ["--term-jitter", f"{config.term_jitter:g}", "--release", prepared.release, "--gate"]
    command += ["--metrics-host", config.metrics_host, "--metrics-port", str(config.metrics_port)]
    command += ["--run-dir", str(report / "server"), "--chaos-report-json", str(report / "summary.json")]
    if config.app:
        command += ["--app", config.app]
    if config.allow:
        command += ["--allow", config.allow]
    if config.http_rejection_is_error:
        command += ["--http-rejection-is-error"]
    return command + list(config.extra_locust_args)


def run_soak(config: SoakConfig, quiet: bool = False) -> dict[str, Any]:
    """Runs one soak; returns its summary (``summary["gate"]["exit_code"]`` is the exit code)."""
    prepared = prepare(config)
    if config.metrics_port == 0:
        # Any free port, but a known one: the progress lines read it.
        config = dataclasses.replace(config, metrics_port=_free_port(config.metrics_host))
    report = config.report_dir
    if report.exists():
        shutil.rmtree(report / "server", ignore_errors=True)
        (report / "summary.json").unlink(missing_ok=True)
    report.mkdir(parents=True, exist_ok=True)
    command = locust_command(config, prepared)
    (report / "command.txt").write_text(" ".join(command) + "\n")
    started = time.monotonic()
    with open(report / "locust.log", "w") as output:
        # Its own session: a Ctrl-C in the terminal reaches only us, and we forward one.
        locust = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            _watch(locust, config, started, quiet)
        except KeyboardInterrupt:
            _stop_gracefully(locust)
    summary_path = report / "summary.json"
    if not summary_path.is_file():
        failed = _error_summary(config, prepared, locust.returncode, report / "locust.log")
        summary_path.write_text(json.dumps(failed, indent=2) + "\n")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    summary["soak"] = {
        "wall_seconds": round(time.monotonic() - started, 1),
        "locust_exit_code": locust.returncode,
        "command": command,
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    write_markdown_report(summary, report / "report.md")
    if not quiet:
        print(format_summary(summary), flush=True)
        print(f"report: {report}/", flush=True)
    return summary


def _stop_gracefully(locust: subprocess.Popen[bytes]) -> None:
    """Ctrl-C: Locust stops users, the deployment and writes its summary; nothing is lost."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the report short
    try:
        print("stopping: waiting for Locust to write its report...", file=sys.stderr, flush=True)
        locust.send_signal(signal.SIGINT)
        try:
            locust.wait(timeout=120)
        except subprocess.TimeoutExpired:
            locust.kill()
            locust.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def _watch(locust: subprocess.Popen[bytes], config: SoakConfig, started: float, quiet: bool) -> None:
    url = f"http://{config.metrics_host}:{config.metrics_port}/metrics"
    # Bounded: Locust stops itself at --duration; this only waits past it with a margin.
    deadline = started + config.duration + 300
    next_progress = started + _PROGRESS_SECONDS
    while locust.poll() is None:
        if time.monotonic() > deadline:
            log.error("locust did not stop within %.0fs of its run time; stopping it", 300)
            locust.send_signal(signal.SIGINT)
            locust.wait(timeout=60)
            return
        time.sleep(0.2)
        if not quiet and time.monotonic() >= next_progress:
            next_progress += _PROGRESS_SECONDS
            _progress(url, time.monotonic() - started, config.duration)


def _progress(url: str, elapsed: float, duration: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        print(f"  {elapsed:5.0f}s elapsed, {max(0.0, duration - elapsed):5.0f}s left (starting)", file=sys.stderr)
        return
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    print(
        f"  {elapsed:5.0f}s elapsed, {max(0.0, duration - elapsed):5.0f}s left: "
        f"TERMs {totals.get('handshake_chaos_signals_total', 0):.0f}, "
        f"handshakes {totals.get('handshake_chaos_handshakes_total', 0):.0f}, "
        f"errors {totals.get('handshake_chaos_shutdown_errors_total', 0):.0f}",
        file=sys.stderr,
        flush=True,
    )


def _error_summary(config: SoakConfig, prepared: Prepared, code: int | None, log_path: Path) -> dict[str, Any]:
    """Locust stopped before writing its summary: the target or the run could not start."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if "handshake-chaos:" in line]
    reason = lines[-1].split("handshake-chaos:", 1)[-1].strip() if lines else f"locust exited with code {code}"
    exit_code = code if code in (2, 4) else EXIT_CODES[ERROR]
    return {
        "release": prepared.release,
        "ws": config.ws,
        "versions": prepared.versions,
        "gate": {"verdict": ERROR, "exit_code": exit_code, "reason": reason, "failing": []},
        "errors": [],
        "signals": {"sent": 0, "dry_run": 0, "landed_with_pending": 0, "pending_at_term": [], "records": []},
        "outcomes": {},
    }


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def soak_exit_code(summary: dict[str, Any]) -> int:
    code = int(summary["gate"]["exit_code"])
    if code not in (0, 1, 2, 3, 4):
        raise TargetError(f"unexpected gate exit code {code}")
    return code
