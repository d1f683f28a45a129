"""The server families, one record each: how a master is started, what it needs, its modes, ws label and log lines."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from chaos.deployment.families import (
    CHAOS_WORKER_CLASS,
    FAMILIES,
    MASTER_EVENTS,
    MASTER_PROGRAMS,
    OWN_WS_LABELS,
    Launch,
    MasterEvent,
    family,
    older,
    uvicorn_log_config,
)
from chaos.errors import UsageError
from chaos.results import MODES, SERVER_FAMILIES

GUNICORN_FAMILIES = {"gunicorn-uvicorn": CHAOS_WORKER_CLASS, "gunicorn-asgi": "asgi"}


def _launch(tmp_path: Path, **overrides: Any) -> Launch:
    fields: dict[str, Any] = {
        "python": "/envs/0.54.0/bin/python",
        "app": "handshake_chaos_probe:app",
        "fd": 7,
        "workers": 3,
        "ws": "wsproto",
        "graceful_timeout": 5,
        "worker_timeout": 30,
        "run_dir": tmp_path,
        "error_log": tmp_path / "error.log",
        "pidfile": tmp_path / "gunicorn-0.pid",
        "control_socket": tmp_path / "gunicorn-0.ctl",
        "versions": {"uvicorn": "0.54.0", "gunicorn": "26.2.0"},
    }
    return Launch(**(fields | overrides))


def _flag(argv: list[str], flag: str) -> str:
    """The value given to ``flag`` (it must be there, once)."""
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def test_every_server_family_has_its_record():
    assert set(FAMILIES) == set(SERVER_FAMILIES)
    for name in SERVER_FAMILIES:
        assert FAMILIES[name].name == name and family(name) is FAMILIES[name]
        assert FAMILIES[name].program in MASTER_PROGRAMS
    assert MASTER_PROGRAMS == ("gunicorn", "uvicorn")


def test_an_unknown_family_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError, match="unknown server 'tornado'") as caught:
        family("tornado")
    assert all(name in str(caught.value) for name in SERVER_FAMILIES)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("name", sorted(GUNICORN_FAMILIES))
def test_a_gunicorn_master_binds_the_tools_socket_with_its_worker_class(tmp_path, name):
    launch = _launch(tmp_path)
    argv = family(name).command(launch)
    assert argv[:4] == [launch.python, "-m", "gunicorn", launch.app]
    assert _flag(argv, "--bind") == "fd://7"
    assert _flag(argv, "--worker-class") == GUNICORN_FAMILIES[name]
    assert _flag(argv, "--workers") == "3"
    assert _flag(argv, "--graceful-timeout") == "5" and _flag(argv, "--timeout") == "30"
    assert _flag(argv, "--error-logfile") == str(launch.error_log)
    assert _flag(argv, "--pid") == str(launch.pidfile)
    assert _flag(argv, "--worker-tmp-dir") == str(tmp_path)
    assert _flag(argv, "--control-socket") == str(launch.control_socket)  # gunicorn 25.1 or later
    assert "--fd" not in argv and "--certfile" not in argv and "--log-config-json" not in argv
    assert not list(tmp_path.iterdir()), "a gunicorn master's command writes nothing"


@pytest.mark.parametrize("name", sorted(GUNICORN_FAMILIES))
def test_a_gunicorn_master_with_tls_a_log_config_and_no_control_socket(tmp_path, name):
    tls = (tmp_path / "server-cert.pem", tmp_path / "server-key.pem")
    launch = _launch(tmp_path, tls=tls, log_config_json="log.json", versions={"gunicorn": "25.0.0"})
    argv = family(name).command(launch)
    assert _flag(argv, "--certfile") == str(tls[0]) and _flag(argv, "--keyfile") == str(tls[1])
    assert _flag(argv, "--log-config-json") == "log.json"
    assert "--control-socket" not in argv  # before gunicorn 25.1 there is none, and no flag for it


def test_uvicorns_supervisor_takes_the_socket_as_fd_and_writes_its_log_config(tmp_path):
    launch = _launch(tmp_path)
    argv = family("uvicorn-workers").command(launch)
    assert argv[:4] == [launch.python, "-m", "uvicorn", launch.app]
    assert _flag(argv, "--fd") == "7"
    assert _flag(argv, "--workers") == "3"
    assert _flag(argv, "--ws") == "wsproto"
    assert _flag(argv, "--timeout-graceful-shutdown") == "5"  # uvicorn 0.24.0 or later
    log_config = Path(_flag(argv, "--log-config"))
    assert log_config.parent == tmp_path
    assert json.loads(log_config.read_text()) == uvicorn_log_config(launch.error_log)
    assert "--no-access-log" in argv
    assert "--bind" not in argv and "--worker-class" not in argv and "--ssl-certfile" not in argv


def test_uvicorns_supervisor_with_tls_and_before_its_graceful_timeout(tmp_path):
    tls = (tmp_path / "server-cert.pem", tmp_path / "server-key.pem")
    argv = family("uvicorn-workers").command(_launch(tmp_path, tls=tls, versions={"uvicorn": "0.23.2"}))
    assert _flag(argv, "--ssl-certfile") == str(tls[0]) and _flag(argv, "--ssl-keyfile") == str(tls[1])
    assert "--timeout-graceful-shutdown" not in argv


def test_uvicorns_log_config_logs_like_gunicorns_error_log(tmp_path):
    config = uvicorn_log_config(tmp_path / "error.log")
    assert config["handlers"]["error_file"]["filename"] == str(tmp_path / "error.log")
    assert {"uvicorn", "uvicorn.error", "uvicorn.access"} <= set(config["loggers"])
    formatter = config["formatters"]["gunicorn_like"]
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server process", None, None)
    line = logging.Formatter(formatter["format"], formatter["datefmt"]).format(record)
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[INFO\] Started server process", line)


@pytest.mark.parametrize(
    ("name", "versions", "message"),
    [
        ("uvicorn-workers", {"uvicorn": "0.29.0"}, "--server uvicorn-workers needs uvicorn 0.30.0 or later"),
        ("gunicorn-asgi", {"gunicorn": "23.0.0"}, "--server gunicorn-asgi needs gunicorn 24.0 or later"),
    ],
)
def test_a_release_older_than_the_family_needs_is_a_usage_error_naming_the_minimum(name, versions, message):
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        family(name).check_release(versions)
    assert f"this environment has {', '.join(f'{k} {v}' for k, v in versions.items())}" in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("name", "versions"),
    [
        ("gunicorn-uvicorn", {"uvicorn": "0.19.0", "gunicorn": "20.1.0"}),
        ("uvicorn-workers", {"uvicorn": "0.30.0", "gunicorn": "20.1.0"}),
        ("gunicorn-asgi", {"uvicorn": "0.19.0", "gunicorn": "24.0.0"}),
    ],
)
def test_a_release_the_family_can_run_passes(name, versions):
    family(name).check_release(versions)


def test_a_version_that_cannot_be_read_is_never_older():
    assert older("0.23.2", Version("0.24.0")) and not older("0.24.0", Version("0.24.0"))
    assert not older(None, Version("0.24.0")) and not older("local build", Version("0.24.0"))


@pytest.mark.parametrize("name", sorted(GUNICORN_FAMILIES))
def test_gunicorn_families_take_every_mode(name):
    for mode in MODES:
        family(name).check_mode(mode)


def test_uvicorns_supervisor_refuses_the_modes_it_has_no_answer_to():
    spec = family("uvicorn-workers")
    for mode in ("worker-term", "worker-int", "master-hup", "master-term"):
        spec.check_mode(mode)
    for mode in ("master-ttou", "rollout"):
        with pytest.raises(UsageError, match=f"--mode {mode} does not apply to --server uvicorn-workers") as caught:
            spec.check_mode(mode)
        assert "(its modes: worker-term, worker-int, master-hup, master-term)" in str(caught.value)


def test_the_ws_label_is_uvicorns_implementation_unless_the_family_has_its_own():
    for name in ("gunicorn-uvicorn", "uvicorn-workers"):
        assert family(name).ws_label("wsproto") == "wsproto"
        assert family(name).ws_choices(["wsproto", "websockets"]) == ["wsproto", "websockets"]
    assert family("gunicorn-asgi").ws_label("wsproto") == "gunicorn"
    assert family("gunicorn-asgi").ws_choices(["wsproto", "websockets"]) == ["gunicorn"]
    assert OWN_WS_LABELS == ("gunicorn",)


def _master_event(message: str, events: tuple[MasterEvent, ...]) -> str | None:
    """The event a master line is counted as, as the detector names it."""
    for pattern, event in events:
        found = pattern.search(message)
        if found:
            return event.format(*[group.lower() for group in found.groups() if group])
    return None


GUNICORN_MASTER_LINES = {  # as gunicorn's arbiter logs them
    "Starting gunicorn 26.2.0": "master_start",
    "Handling signal: term": "handling_signal_term",
    "Handling signal: ttou": "handling_signal_ttou",
    "Hang up: Master": "master_reload",
    "Shutting down: Master": "master_shutdown",
    "Reason: Worker failed to boot.": "master_halt_reason",
}
UVICORN_MASTER_LINES = {  # as uvicorn's multiprocess supervisor logs them
    "Started parent process [25912]": "master_start",
    "Received SIGTERM, exiting.": "handling_signal_term",
    "Received SIGHUP, restarting processes.": "handling_signal_hup",
    "Stopping parent process [25912]": "master_shutdown",
}


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("gunicorn-uvicorn", GUNICORN_MASTER_LINES),
        ("gunicorn-asgi", GUNICORN_MASTER_LINES),
        ("uvicorn-workers", UVICORN_MASTER_LINES),
    ],
)
def test_each_familys_master_lines_are_its_events_and_the_detectors(name, lines):
    for message, event in lines.items():
        assert _master_event(message, family(name).master_events) == event, message
        assert _master_event(message, MASTER_EVENTS) == event, message  # whichever family logged it


@pytest.mark.parametrize(
    "message",
    ["Shutting down", "Booting worker with pid: 11", "Started server process [25914]", "Worker exiting (pid: 11)"],
)
def test_worker_lines_are_no_master_event(message):
    assert _master_event(message, MASTER_EVENTS) is None
