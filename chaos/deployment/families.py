"""Server families: everything that differs between the servers under test, one record each.

A family is how a deployment runs its workers: gunicorn with uvicorn's worker class, uvicorn's
own supervisor (``uvicorn --workers N``), or gunicorn's native ASGI worker. Each record says how
to start one master on the tool's listening socket, which chaos modes apply, which releases it
needs, what the ``ws`` label is, how a master is recognised, and the master's own log lines.
Every other module asks the record (``family(name)``); none compares family names. A new family
is one new record here, and its tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from packaging.version import InvalidVersion, Version

from chaos.errors import UsageError
from chaos.results import MODES, Mode, ServerFamily

# The probe's worker class for gunicorn: uvicorn's, plus readiness and the ws implementation chosen.
CHAOS_WORKER_CLASS = "handshake_chaos_worker.ChaosUvicornWorker"
# uvicorn's own workers log like gunicorn's error log (time, pid, level), so one parser reads every family.
_UVICORN_LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
_UVICORN_GRACEFUL_TIMEOUT_FROM = Version("0.24.0")  # uvicorn's --timeout-graceful-shutdown (PR #1950)
_CONTROL_SOCKET_FROM = Version("25.1")  # gunicorn opens a control socket, by default one per user


@dataclass(frozen=True)
class Launch:
    """What one master of a deployment is started with: the family's command is built from this."""

    python: str
    app: str
    fd: int
    workers: int
    ws: str
    graceful_timeout: int
    worker_timeout: int
    run_dir: Path
    error_log: Path
    pidfile: Path
    control_socket: Path
    versions: dict[str, Any]
    tls: tuple[Path, Path] | None = None  # certificate, key
    log_config_json: str | None = None
    chdir: str = "."


@dataclass(frozen=True)
class Requirement:
    """A minimum release of a package the family needs, and why."""

    package: str
    minimum: Version
    why: str

    def unmet(self, versions: dict[str, Any]) -> bool:
        return older(versions.get(self.package), self.minimum)


# The master's own lines about its life: recognised, counted by event, never judged as errors.
MasterEvent = tuple[re.Pattern[str], str]
_GUNICORN_MASTER_EVENTS: tuple[MasterEvent, ...] = (
    (re.compile(r"^Starting gunicorn "), "master_start"),
    (re.compile(r"^Handling signal: (\w+)"), "handling_signal_{0}"),
    (re.compile(r"^Hang up: Master"), "master_reload"),
    (re.compile(r"^Shutting down: Master"), "master_shutdown"),
    (re.compile(r"^Reason: "), "master_halt_reason"),
)
_UVICORN_MASTER_EVENTS: tuple[MasterEvent, ...] = (
    (re.compile(r"^Started parent process"), "master_start"),
    (re.compile(r"^Received SIG(\w+)"), "handling_signal_{0}"),
    (re.compile(r"^Stopping parent process"), "master_shutdown"),
)


@dataclass(frozen=True)
class FamilySpec:
    name: ServerFamily
    description: str
    # The program the master runs as: how a master is recognised, and named in messages.
    program: str
    command: Callable[[Launch], list[str]]
    modes: tuple[Mode, ...]
    requires: tuple[Requirement, ...] = ()
    # The ws label of every series: None when uvicorn's implementation is chosen (--ws), else the
    # family's own (gunicorn's ASGI worker has one, and no choice).
    own_ws: str | None = None
    # Where the worker class comes from: None for uvicorn-worker's pairing rule, else fixed.
    worker_base: str | None = None
    # The master's stdout/stderr carries worker crashes (multiprocessing's): it belongs in the judged log.
    output_is_error_log: bool = False
    takes_log_config_json: bool = True
    master_events: tuple[MasterEvent, ...] = _GUNICORN_MASTER_EVENTS

    def ws_label(self, ws: str) -> str:
        """The ``ws`` label of a run with ``--ws ws``."""
        return self.own_ws or ws

    def ws_choices(self, wanted: list[str]) -> list[str]:
        """The ws cells of a matrix asking for ``wanted``: the family's own, or each one asked for."""
        return [self.own_ws] if self.own_ws else list(wanted)

    def check_release(self, versions: dict[str, Any]) -> None:
        """What the family needs of the release, checked before anything starts (exit 2 otherwise)."""
        for requirement in self.requires:
            if requirement.unmet(versions):
                raise UsageError(
                    f"--server {self.name} needs {requirement.package} {requirement.minimum} or later "
                    f"({requirement.why}); this environment has {requirement.package} "
                    f"{versions.get(requirement.package)}"
                )

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise UsageError(
                f"--mode {mode} does not apply to --server {self.name} (its modes: {', '.join(self.modes)})"
            )


def older(version: object, than: Version) -> bool:
    try:
        return Version(str(version)) < than
    except InvalidVersion:
        return False


def _tls(launch: Launch, cert_flag: str, key_flag: str) -> list[str]:
    if launch.tls is None:
        return []
    certificate, key = launch.tls
    return [cert_flag, str(certificate), key_flag, str(key)]


def _gunicorn(worker_class: str) -> Callable[[Launch], list[str]]:
    def command(launch: Launch) -> list[str]:
        # gunicorn 25.1+ opens a control socket, by default one path in the user's home shared by every
        # master; each master of ours keeps its own in its run directory, gone when it is.
        control = [] if older(launch.versions.get("gunicorn"), _CONTROL_SOCKET_FROM) else [
            "--control-socket", str(launch.control_socket)
        ]  # fmt: skip
        return [
            launch.python, "-m", "gunicorn", launch.app,
            "--worker-class", worker_class,
            "--workers", str(launch.workers),
            "--bind", f"fd://{launch.fd}",
            "--graceful-timeout", str(launch.graceful_timeout),
            "--timeout", str(launch.worker_timeout),
            "--error-logfile", str(launch.error_log),
            "--log-level", "info",
            "--pid", str(launch.pidfile),
            "--worker-tmp-dir", str(launch.run_dir),
            "--chdir", launch.chdir,
            *_tls(launch, "--certfile", "--keyfile"),
            *control,
            *(["--log-config-json", launch.log_config_json] if launch.log_config_json else []),
        ]  # fmt: skip

    return command


def uvicorn_log_config(error_log: Path) -> dict[str, Any]:
    handler = {"class": "logging.FileHandler", "formatter": "gunicorn_like", "filename": str(error_log)}
    logger = {"level": "INFO", "handlers": ["error_file"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gunicorn_like": {"format": _UVICORN_LOG_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S %z"}},
        "handlers": {"error_file": handler},
        "loggers": {"uvicorn": logger, "uvicorn.error": logger, "uvicorn.access": {**logger, "level": "WARNING"}},
    }


def _uvicorn_supervisor(launch: Launch) -> list[str]:
    """uvicorn's own supervisor: ``uvicorn --workers N`` on the tool's socket, logging like gunicorn."""
    import json

    log_config = launch.run_dir / "uvicorn-log-config.json"
    log_config.write_text(json.dumps(uvicorn_log_config(launch.error_log)))
    graceful = (
        []
        if older(launch.versions.get("uvicorn"), _UVICORN_GRACEFUL_TIMEOUT_FROM)
        else ["--timeout-graceful-shutdown", str(launch.graceful_timeout)]
    )
    return [
        launch.python, "-m", "uvicorn", launch.app,
        "--fd", str(launch.fd),
        "--workers", str(launch.workers),
        "--ws", launch.ws,
        "--lifespan", "on",
        "--log-config", str(log_config),
        "--no-access-log",
        *graceful,
        *_tls(launch, "--ssl-certfile", "--ssl-keyfile"),
    ]  # fmt: skip


FAMILIES: dict[ServerFamily, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            name="gunicorn-uvicorn",
            description="gunicorn with uvicorn's worker class",
            program="gunicorn",
            command=_gunicorn(CHAOS_WORKER_CLASS),
            modes=MODES,
        ),
        FamilySpec(
            name="uvicorn-workers",
            description="uvicorn's own supervisor (uvicorn --workers N)",
            program="uvicorn",
            command=_uvicorn_supervisor,
            # No TTOU/TTIN of gunicorn's kind (its TTOU ends the newest worker), and one supervisor per socket.
            modes=("worker-term", "worker-int", "master-hup", "master-term"),
            # It replaces a worker that died, and handles HUP, from 0.30.0 on (PR #2183).
            requires=(Requirement("uvicorn", Version("0.30.0"), "a supervisor that replaces its workers"),),
            worker_base="uvicorn-workers",
            output_is_error_log=True,
            takes_log_config_json=False,  # the tool sets its log (it must read like gunicorn's)
            master_events=_UVICORN_MASTER_EVENTS,
        ),
        FamilySpec(
            name="gunicorn-asgi",
            description="gunicorn's own ASGI worker (-k asgi)",
            program="gunicorn",
            command=_gunicorn("asgi"),
            modes=MODES,
            requires=(Requirement("gunicorn", Version("24.0"), "its own ASGI worker"),),
            own_ws="gunicorn",
            worker_base="gunicorn-asgi",
        ),
    )
}
assert set(FAMILIES) == set(get_args(ServerFamily)), "every server family has its record"
# Every ws label a run can carry besides uvicorn's implementations: the families' own.
OWN_WS_LABELS: tuple[str, ...] = tuple(spec.own_ws for spec in FAMILIES.values() if spec.own_ws)
# How a master is recognised (its command line or name): any family's program.
MASTER_PROGRAMS: tuple[str, ...] = tuple(sorted({spec.program for spec in FAMILIES.values()}))
# Every master's own lines, whichever family logged them (the detector needs no family to read a log).
MASTER_EVENTS: tuple[MasterEvent, ...] = tuple(
    dict.fromkeys(event for spec in FAMILIES.values() for event in spec.master_events)
)


def family(name: str) -> FamilySpec:
    try:
        return FAMILIES[name]  # type: ignore[index]
    except KeyError:
        raise UsageError(f"unknown server {name!r} (choose from {', '.join(FAMILIES)})") from None
