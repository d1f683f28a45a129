"""The options of one chaos run, each declared once (see ``chaos.optionmodel``).

Built at the edge (Locust's parser, the ``soak``/``matrix``/``controller`` commands), validated
as a whole, then passed explicitly; the pieces below (target, controller, load, gate) get
their own small configs derived from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaos.deployment.families import family
from chaos.deployment.launcher import PROBE_WS_PATH, DeploymentConfig
from chaos.deployment.processes import read_pidfile
from chaos.detect.client import WireJudgement
from chaos.detect.logfollow import GUNICORN_FORMAT, JsonFormat, LineFormat, PlainFormat
from chaos.errors import UsageError
from chaos.load.client import LoadProfile
from chaos.optionmodel import RUN, check_all, option, secret_names
from chaos.results import (
    DEFAULT_MODE,
    DEFAULT_SERVER,
    MODES,
    SCENARIOS,
    SERVER_FAMILIES,
    WS_CHOICES,
    Mode,
    Scenario,
    ServerFamily,
)
from chaos.run.controller import MODE_SPECS, REDEPLOYING_MODES, WORKER_SIGNALS, ControllerConfig
from chaos.run.feed import controller_url
from chaos.run.gate import EvidencePolicy, GatePolicy
from chaos.scenarios import SCENARIO_SPECS

_CONTROLLED = RUN | {"controller"}
LOG_FORMATS = ("gunicorn", "json", "plain")
_LOCUST_AND_CONTROLLER = frozenset({"locust", "controller"})

_ONE_MASTER = "give the gunicorn master as --target-pid or --target-pidfile (one of them, not both)"


def check_host_url(host: str) -> None:
    """A deployment's URL as the users open it: ws://, wss://, http:// or https:// and a host name."""
    try:
        parts = urlsplit(host)
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError:
        raise UsageError(f"--host {host!r} is not a URL (e.g. ws://127.0.0.1:8000)") from None
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise UsageError(f"--host must be a ws:// or http:// URL with a host name, got {host!r}")


@dataclass(frozen=True)
class ChaosOptions:
    # -- the load: each Locust user holds one handshake at a time ------------------------
    hold_seconds: float = option(
        2.0,
        "--hold-seconds",
        "how long the probe app keeps each handshake pending",
        minimum=0,
        maximum=60,
        group="load",
    )
    hold_jitter: float = option(
        0.5,
        "--hold-jitter",
        "spread of each hold time, as a fraction of it",
        minimum=0,
        maximum=1,
        group="load",
    )
    keep_open_seconds: float = option(
        1.0,
        "--keep-open-seconds",
        "how long a user keeps an accepted websocket open",
        minimum=0,
        group="load",
    )
    ws_path: str = option(PROBE_WS_PATH, "--ws-path", "path of the websocket route the users open", group="load")
    connect_timeout: float = option(
        5.0, "--connect-timeout", "TCP connect timeout, seconds", positive=True, group="load"
    )
    handshake_timeout: float = option(
        30.0,
        "--handshake-timeout",
        "seconds to wait for the handshake response, beyond the hold",
        positive=True,
        group="load",
    )
    max_handshakes: int = option(
        1_000_000,
        "--max-handshakes",
        "upper bound of handshake attempts per Locust process",
        minimum=1,
        group="load",
    )
    ca_file: str | None = option(
        None,
        "--ca-file",
        "wss://: trust this CA bundle instead of the system's (with --tls: the embedded deployment's own CA)",
        group="load",
    )
    insecure: bool = option(
        False, "--insecure", "wss://: do not verify the server's certificate (self-signed)", group="load"
    )
    # -- the deployment (embedded: started by the tool) -----------------------------------
    ws: str = option(
        "auto",
        "--ws",
        "uvicorn ws implementation (the embedded deployment's; the ws label otherwise)",
        scope="process",
        entry_points=frozenset({"locust", "soak", "controller"}),
        choices=WS_CHOICES,
        defaults={"soak": "wsproto"},
        what="implementation",
        choices_named="uvicorn's ws implementations are",
        group="deployment",
    )
    server: ServerFamily = option(
        DEFAULT_SERVER,
        "--server",
        "server family under test: gunicorn with uvicorn's worker, uvicorn's own supervisor, gunicorn's ASGI worker",
        scope="process",
        entry_points=frozenset({"locust", "soak", "controller"}),
        choices=SERVER_FAMILIES,
        what="server",
        group="deployment",
    )
    workers: int = option(
        2, "--workers", "gunicorn workers of the embedded deployment", scope="process", minimum=1, group="deployment"
    )
    graceful_timeout: int = option(
        10,
        "--graceful-timeout",
        "gunicorn --graceful-timeout of the embedded deployment",
        scope="process",
        minimum=0,
        group="deployment",
    )
    target_python: str | None = option(
        None,
        "--target-python",
        "interpreter whose environment runs the embedded deployment (default: this one)",
        scope="process",
        entry_points=frozenset({"locust", "soak"}),
        group="deployment",
    )
    app: str | None = option(
        None,
        "--app",
        "your ASGI app (module:attr) for the embedded deployment; the probe route is mounted beside it",
        scope="process",
        group="deployment",
    )
    tls: bool = option(
        False,
        "--tls",
        "the embedded deployment serves wss:// with a throwaway certificate made at start",
        scope="process",
        group="deployment",
    )
    app_dir: str | None = option(
        None,
        "--app-dir",
        "directory put on the deployment's Python path, where your --app module lives",
        scope="process",
        group="deployment",
    )
    run_dir: str | None = option(
        None,
        "--run-dir",
        "keep the embedded deployment's logs in this directory",
        scope="process",
        entry_points=frozenset({"locust"}),
        group="output",
    )
    # -- the controller ---------------------------------------------------------------------
    mode: Mode = option(
        DEFAULT_MODE,
        "--mode",
        "what the controller signals, as a real deploy would (docs/deploy-shapes.md)",
        # Every series of a run carries its mode: it is the run's, fixed when the process starts.
        scope="process",
        # matrix takes several (chaos.commands.matrix.MatrixSettings.modes).
        entry_points=frozenset({"locust", "soak", "controller"}),
        choices=MODES,
        what="mode",
        group="signals",
    )
    replicas: int = option(
        2,
        "--replicas",
        "--mode rollout: gunicorn masters serving the one listening socket, like replicas behind a service",
        scope="process",
        entry_points=RUN,
        minimum=1,
        maximum=8,
        group="deployment",
    )
    term_interval: float = option(
        3.0,
        "--term-interval",
        "seconds between signals",
        entry_points=_CONTROLLED,
        aliases=("--interval",),
        minimum=0,
        group="signals",
    )
    term_jitter: float = option(
        1.0,
        "--term-jitter",
        "random extra seconds added to each interval",
        entry_points=_CONTROLLED,
        aliases=("--jitter",),
        minimum=0,
        group="signals",
    )
    min_alive: int = option(
        1,
        "--min-alive",
        "never signal when fewer workers than this would be left",
        entry_points=_CONTROLLED,
        minimum=0,
        group="signals",
    )
    max_signals: int | None = option(
        None,
        "--max-signals",
        "stop rolling after this many signals per test run",
        entry_points=_CONTROLLED,
        minimum=0,
        group="signals",
    )
    dry_run: bool = option(
        False,
        "--dry-run",
        "log the signals the controller would send, send none",
        entry_points=_CONTROLLED,
        group="signals",
    )
    signal_name: str = option(
        "TERM",
        "--signal",
        "signal the controller sends to each worker",
        entry_points=frozenset({"controller"}),
        choices=tuple(WORKER_SIGNALS),
        what="signal",
        group="signals",
    )
    target_pid: int | None = option(
        None,
        "--target-pid",
        "gunicorn master pid of the --host deployment, whose workers to roll",
        scope="process",
        entry_points=_LOCUST_AND_CONTROLLER,
        aliases=("--pid",),
        minimum=1,
        group="deployment",
    )
    target_pidfile: str | None = option(
        None,
        "--target-pidfile",
        "gunicorn pidfile of the --host deployment",
        scope="process",
        entry_points=_LOCUST_AND_CONTROLLER,
        aliases=("--pidfile",),
        group="deployment",
    )
    controllers: list[str] = option(
        [],
        "--chaos-controller",
        "a handshake-chaos controller on the --host deployment's host, by its URL (http://HOST:PORT); its "
        "signals, exposure and server-side errors become this run's (repeatable: one per deployment host)",
        scope="process",
        entry_points=frozenset({"locust"}),
        repeatable=True,
        group="deployment",
    )
    token: str | None = option(
        None,
        "--chaos-token",
        "the shared token between a controller and the Locust runs reading it (required beyond loopback; "
        "prefer the env var: a command line is visible to every user of the host)",
        scope="process",
        entry_points=_LOCUST_AND_CONTROLLER,
        secret=True,
        group="deployment",
    )
    server_log: str | None = option(
        None,
        "--server-log",
        "error log of the --host deployment (or of the embedded one's --log-config-json), for server-side detection",
        scope="process",
        entry_points=_CONTROLLED,
        group="detection",
    )
    log_format: str = option(
        "gunicorn",
        "--log-format",
        "how the server log is written: gunicorn's text, one JSON object per line, or plain text without [pid]",
        scope="process",
        entry_points=_CONTROLLED,
        choices=LOG_FORMATS,
        what="log format",
        group="detection",
    )
    log_json_keys: str = option(
        "",
        "--log-json-keys",
        "--log-format json: PART=FIELD,... naming the message, pid, level and exception fields "
        "(default: message|msg|event, process|pid, levelname|level|severity, exc_info|exception|exc_text)",
        scope="process",
        entry_points=_CONTROLLED,
        group="detection",
    )
    log_config_json: str | None = option(
        None,
        "--log-config-json",
        "the embedded deployment logs through this logging config (gunicorn's --log-config-json); "
        "give --server-log (where it writes) and --log-format",
        scope="process",
        entry_points=RUN,
        group="detection",
    )
    # -- labels, metrics, the gate ------------------------------------------------------------
    release: str | None = option(
        None,
        "--release",
        "release label of the metrics and reports (default: the uvicorn version)",
        scope="process",
        entry_points=frozenset({"locust", "soak", "controller"}),
        group="output",
    )
    metrics_host: str = option(
        "127.0.0.1",
        "--metrics-host",
        "address of the /metrics endpoint",
        scope="process",
        entry_points=_CONTROLLED,
        group="output",
    )
    metrics_port: int = option(
        9646,
        "--metrics-port",
        "port of the /metrics endpoint (0: any free port)",
        scope="process",
        entry_points=_CONTROLLED,
        minimum=0,
        maximum=65535,
        group="output",
    )
    gate: bool = option(
        False,
        "--gate",
        "exit 1 on handshake-time shutdown errors, 3 when no signal caught a pending handshake",
        entry_points=frozenset({"locust"}),
        group="gate",
    )
    http_rejection_is_error: bool = option(
        False,
        "--http-rejection-is-error",
        "count an HTTP rejection of a caught handshake as an error",
        scope="process",
        group="detection",
    )
    incomplete_is_error: bool = option(
        False,
        "--incomplete-is-error",
        "count an incomplete answer to a caught handshake as an error: a denial whose body was cut, an "
        "accepted connection that went without a close frame or whose first frame was cut",
        scope="process",
        group="detection",
    )
    scenarios: list[Scenario] = option(
        [],
        "--scenario",
        "which states of the handshake the signals find: NAME[,NAME...] mixed by weight "
        "(default: every one that applies to the release; docs/scenarios.md)",
        choices=SCENARIOS,
        what="scenario",
        # matrix takes several as an axis (chaos.commands.matrix.MatrixSettings.scenarios).
        entry_points=frozenset({"locust", "soak"}),
        group="load",
    )
    frame_bytes: int = option(
        262144,
        "--frame-bytes",
        "accept-send: the size of the app's first frame, which the client reads late",
        minimum=1,
        maximum=1 << 20,
        group="load",
    )
    until_verdict: bool = option(
        False,
        "--until-verdict",
        "stop as soon as the verdict can no longer change (--duration stays the cap)",
        defaults={"matrix": True},
        group="gate",
    )
    evidence_signals: int = option(
        5, "--evidence-signals", "--until-verdict: signals needed for a pass", minimum=1, group="gate"
    )
    evidence_pending: int = option(
        10,
        "--evidence-pending",
        "--until-verdict: pending handshakes each of those signals must catch",
        minimum=1,
        group="gate",
    )
    allow: str = option("", "--allow", "errors the gate tolerates: SIGNATURE=N[,SIGNATURE=N]", group="gate")
    report_json: str | None = option(
        None,
        "--chaos-report-json",
        "write the run summary (summary.json) to this file",
        scope="process",
        entry_points=_LOCUST_AND_CONTROLLER,
        group="output",
    )
    junit_xml: str | None = option(
        None,
        "--junit-xml",
        "write the gate's checks as JUnit XML to this file at the end (soak and matrix have their own)",
        scope="process",
        entry_points=frozenset({"locust"}),
        group="output",
    )
    events_file: str | None = option(
        None,
        "--chaos-events",
        "append the run's events (started, signal, first_seen, progress, summary) to this file as JSON lines",
        scope="process",
        entry_points=frozenset({"locust"}),
        group="output",
    )

    def validate(self, host: str | None) -> None:
        """Every option within its declared range, then the checks that span several options."""
        check_all(self)
        if not self.ws_path.startswith("/"):
            raise UsageError(f"--ws-path must start with '/', got {self.ws_path!r}")
        if self.target_pid is not None and self.target_pidfile is not None:
            raise UsageError(_ONE_MASTER)
        if self.controllers:
            for url in self.controllers:
                controller_url(url)
            if not host:
                raise UsageError("--chaos-controller reads a deployment on another host: give its URL as --host")
            if self.target_pid is not None or self.target_pidfile is not None:
                raise UsageError("--chaos-controller rolls the deployment from its own host: no --target-pid here")
        if host:
            check_host_url(host)
        if not host and (self.target_pid is not None or self.target_pidfile is not None):
            raise UsageError("a target master pid/pidfile needs --host pointing at that deployment")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise UsageError(f"--ca-file: no such file {self.ca_file}")
        family(self.server).check_mode(self.mode)
        if host and self.mode in REDEPLOYING_MODES:
            raise UsageError(
                f"--mode {self.mode} restarts the deployment's master, which only the embedded deployment "
                "(no --host) can be"
            )
        if self.log_config_json is not None:
            if host:
                raise UsageError("--log-config-json configures the embedded deployment; with --host it logs as it does")
            if not Path(self.log_config_json).is_file():
                raise UsageError(f"--log-config-json: no such file {self.log_config_json}")
            if self.server_log is None:
                raise UsageError("--log-config-json: give --server-log, the file its handler writes")
        elif self.server_log is not None and not host:
            raise UsageError(
                "--server-log names an external deployment's log (or the embedded one's --log-config-json)"
            )
        self.line_format()
        if self.tls and host:
            raise UsageError("--tls makes the embedded deployment serve wss://; with --host, give a wss:// URL instead")
        if self.app_dir is not None and not Path(self.app_dir).is_dir():
            raise UsageError(f"--app-dir: no such directory {self.app_dir}")
        self.gate_policy()
        if not host:
            self.check_workers(self.workers)
        if not host:
            self.target_config().validate()

    def check_workers(self, workers: int) -> None:
        """The minimum-alive rule leaves a worker to signal among ``workers`` (known at start for the
        embedded deployment, at attach for an external one)."""
        if not self.dry_run and not MODE_SPECS[self.mode].reaches_all and self.min_alive >= workers:
            raise UsageError(
                f"--min-alive {self.min_alive} leaves no worker to signal among {workers}; "
                "use more workers or a lower --min-alive"
            )

    def master_pid(self) -> int:
        """The external master the controller rolls: --target-pid or --target-pidfile, exactly one."""
        if (self.target_pid is None) == (self.target_pidfile is None):
            raise UsageError(_ONE_MASTER)
        return self.target_pid if self.target_pid is not None else read_pidfile(self.target_pidfile or "")

    def gate_policy(self) -> GatePolicy:
        return GatePolicy.parse(item for item in self.allow.split(",") if item.strip())

    def line_format(self) -> LineFormat:
        if self.log_format == "json":
            try:
                return JsonFormat.parse_keys(self.log_json_keys)
            except ValueError as exc:
                raise UsageError(f"--log-json-keys: {exc}") from None
        if self.log_json_keys:
            raise UsageError("--log-json-keys applies to --log-format json")
        return PlainFormat() if self.log_format == "plain" else GUNICORN_FORMAT

    def evidence_policy(self) -> EvidencePolicy:
        return EvidencePolicy(self.evidence_signals, self.evidence_pending)

    def controller_config(self) -> ControllerConfig:
        return ControllerConfig(
            interval=self.term_interval,
            jitter=self.term_jitter,
            min_alive=self.min_alive,
            dry_run=self.dry_run,
            max_signals=self.max_signals,
            signal_name=self.signal_name,
            replacement_timeout=max(60.0, self.graceful_timeout + 30.0),
            mode=self.mode,
        )

    def target_config(self) -> DeploymentConfig:
        kwargs: dict[str, Any] = {
            "ws": self.ws,
            "workers": self.workers,
            "graceful_timeout": self.graceful_timeout,
            "tls": self.tls,
            "replicas": self.replicas if self.mode == "rollout" else 1,
            "server": self.server,
        }
        if self.target_python:
            kwargs["python"] = self.target_python
        if self.app:
            kwargs["app"] = self.app
        if self.app_dir:
            kwargs["app_path"] = (str(Path(self.app_dir).resolve()),)
        if self.run_dir:
            kwargs["run_dir"] = Path(self.run_dir)
        if self.log_config_json:
            kwargs["log_config_json"] = str(Path(self.log_config_json).resolve())
        return DeploymentConfig(**kwargs)

    def wire_judgement(self) -> WireJudgement:
        return WireJudgement(self.http_rejection_is_error, self.incomplete_is_error)

    def load_profile(self, scenarios: Sequence[str] | None = None) -> LoadProfile:
        """What each user does; ``scenarios`` as the run planned them (default: those asked for)."""
        running = tuple(scenarios or self.scenarios or ("hold-accept",))
        return LoadProfile(
            scenarios=running,
            scenario_weights=tuple(SCENARIO_SPECS[name].weight for name in running),  # type: ignore[index]
            frame_bytes=self.frame_bytes,
            hold_seconds=self.hold_seconds,
            hold_jitter=self.hold_jitter,
            keep_open_seconds=self.keep_open_seconds,
            ws_path=self.ws_path,
            connect_timeout=self.connect_timeout,
            handshake_timeout=self.handshake_timeout,
            ca_file=self.ca_file,
            insecure=self.insecure,
        )

    def as_dict(self) -> dict[str, Any]:
        """The options as a summary shows them: a secret only as whether it was set."""
        values = asdict(self)
        for name in secret_names(type(self)):
            values[name] = "(set)" if values[name] else None
        return values
