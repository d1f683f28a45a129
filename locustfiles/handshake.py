"""Locust users that hold websocket handshakes pending while TERM rolls through gunicorn workers.

    locust -f locustfiles/handshake.py --headless -u 200 -r 50 -t 60s

With no ``--host`` it starts its own gunicorn+uvicorn deployment of the probe app on
127.0.0.1 (a free port) and rolls TERM through its workers for the whole run. With
``--host`` it only loads that deployment, and rolls its workers too when told its
master (``--target-pid`` / ``--target-pidfile``).
"""

from __future__ import annotations

# Locust first: it monkey-patches the standard library for gevent.
import locust
from locust import User, constant, events, task
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

import dataclasses
import logging
import sys

import gevent

from chaos.errors import ChaosError
from chaos.session import ChaosOptions, ChaosSession, format_summary, handshake_url
from chaos.wsclient import ACCEPTED, REFUSED, HandshakeResult, hold_handshake

log = logging.getLogger("handshake-chaos")
_DEFAULTS = ChaosOptions()
# A connection that fails at once (refused, nothing listening) must not become a hot loop.
_FAST_FAILURE_BACKOFF_SECONDS = 0.5


class HandshakeFailed(Exception):
    """How Locust's failure table names a handshake that did not end in an accept."""


@events.init_command_line_parser.add_listener
def _add_options(parser):  # type: ignore[no-untyped-def]
    group = parser.add_argument_group("handshake-chaos")

    def option(flag: str, dest: str, kind: type, help_text: str) -> None:
        default = getattr(_DEFAULTS, dest)
        env_var = "HANDSHAKE_CHAOS_" + dest.upper()
        if kind is bool:
            group.add_argument(flag, dest=dest, action="store_true", default=default, env_var=env_var, help=help_text)
        else:
            group.add_argument(
                flag, dest=dest, type=kind, default=default, env_var=env_var, help=f"{help_text} (default: {default})"
            )

    option("--hold-seconds", "hold_seconds", float, "how long the probe app keeps each handshake pending")
    option("--keep-open-seconds", "keep_open_seconds", float, "how long a user keeps an accepted websocket open")
    option("--ws-path", "ws_path", str, "path of the probe route")
    option("--connect-timeout", "connect_timeout", float, "TCP connect timeout, seconds")
    option("--handshake-timeout", "handshake_timeout", float, "seconds to wait for the handshake response")
    option("--max-handshakes", "max_handshakes", int, "upper bound of handshakes per Locust process")
    option("--ws", "ws", str, "uvicorn ws implementation of the embedded deployment")
    option("--workers", "workers", int, "gunicorn workers of the embedded deployment")
    option("--graceful-timeout", "graceful_timeout", int, "gunicorn --graceful-timeout of the embedded deployment")
    option("--target-python", "target_python", str, "interpreter that runs the embedded deployment")
    option("--app", "app", str, "ASGI app (module:attr) of the embedded deployment instead of the probe")
    option("--term-interval", "term_interval", float, "seconds between rolling TERMs")
    option("--term-jitter", "term_jitter", float, "random extra seconds added to each interval")
    option("--min-alive", "min_alive", int, "never signal when fewer workers than this would be left")
    option("--dry-run", "dry_run", bool, "log the signals the controller would send, send none")
    option("--target-pid", "target_pid", int, "gunicorn master pid of the --host deployment, to roll its workers")
    option("--target-pidfile", "target_pidfile", str, "gunicorn pidfile of the --host deployment")
    option("--chaos-report-json", "report_json", str, "write the run summary as JSON to this file")


def _options_from(parsed) -> ChaosOptions:  # type: ignore[no-untyped-def]
    return ChaosOptions(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(ChaosOptions)})


class _State:
    session: ChaosSession | None = None
    options: ChaosOptions = _DEFAULTS
    url: str | None = None
    attempts = 0


@events.init.add_listener
def _on_init(environment, runner, **_kwargs):  # type: ignore[no-untyped-def]
    try:
        _State.options = _options_from(environment.parsed_options)
        if isinstance(runner, WorkerRunner):
            # Workers only load; the master owns the deployment and the controller. The
            # host arrives with every spawn message.
            _State.options.validate(host="ws://placeholder")
            return
        session = ChaosSession(_State.options, environment.host or None)
        _State.session = session
        environment.host = session.start()
    except ChaosError as exc:
        log.error("handshake-chaos: %s", exc)
        if _State.session is not None:
            _State.session.close()
        sys.exit(exc.exit_code)
    log.info("handshake-chaos: target %s (%s)", environment.host, "embedded" if session.embedded else "external")


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs):  # type: ignore[no-untyped-def]
    if _State.session is not None and isinstance(environment.runner, (LocalRunner, MasterRunner)):
        _State.session.start_controller()


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs):  # type: ignore[no-untyped-def]
    if _State.session is not None:
        _State.session.stop_controller()


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs):  # type: ignore[no-untyped-def]
    session = _State.session
    if session is None:
        return
    _State.session = None
    session.close()
    outcomes = {entry.name: entry.num_requests for entry in environment.stats.entries.values() if entry.method == "WS"}
    summary = session.summary(outcomes)
    session.write_report(summary)
    print(format_summary(summary), flush=True)


class HandshakeUser(User):
    """Opens a handshake to the probe route, holds it while it is pending, reports how it ended."""

    wait_time = constant(0)

    @task
    def hold_one_handshake(self) -> None:
        options = _State.options
        if _State.attempts >= options.max_handshakes:
            raise StopUser()
        _State.attempts += 1
        registry = _State.session.registry if _State.session is not None else None
        result = hold_handshake(
            handshake_url(self.environment.host, options),
            connect_timeout=options.connect_timeout,
            handshake_timeout=options.hold_seconds + options.handshake_timeout,
            keep_open=options.keep_open_seconds,
            registry=registry,
        )
        self._report(result)
        if result.outcome == REFUSED or result.outcome.startswith("os_error_"):
            gevent.sleep(_FAST_FAILURE_BACKOFF_SECONDS)

    def _report(self, result: HandshakeResult) -> None:
        failed = not result.accepted
        self.environment.events.request.fire(
            request_type="WS",
            name=result.outcome,
            response_time=result.handshake_seconds * 1000,
            response_length=result.response_bytes,
            exception=HandshakeFailed(f"{result.outcome}: {result.detail}" if result.detail else result.outcome)
            if failed
            else None,
            context={"status": result.status, "close_code": result.close_code, "started": result.started},
        )


__all__ = ["HandshakeUser", "locust", "ACCEPTED"]
