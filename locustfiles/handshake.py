"""Locust users that hold websocket handshakes pending while TERM rolls through gunicorn workers.

    locust -f locustfiles/handshake.py --headless -u 200 -r 50 -t 60s

With no ``--host`` it starts its own gunicorn+uvicorn deployment of the probe app on
127.0.0.1 (a free port) and rolls TERM through its workers for the whole run. With
``--host`` it only loads that deployment, and rolls its workers too when told its
master (``--target-pid`` / ``--target-pidfile``).

In distributed mode (``--master``/``--worker``, ``--processes``) the master owns the
deployment, the controller, the log follower and the metrics; workers judge their own
handshakes and send the counts with Locust's own stats reports, so nothing is counted
twice or lost.
"""

from __future__ import annotations

# Locust first: it monkey-patches the standard library for gevent.
import locust  # noqa: F401
from locust import User, constant, events, task
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

import dataclasses
import functools
import logging
import random
import sys
from typing import Any

import gevent

from chaos.accounting import ClientDelta, ClientRecorder
from chaos.controller import SignalRecord
from chaos.errors import ChaosError
from chaos.exposure import Address, HandshakeLedger
from chaos.report import format_summary
from chaos.options import ChaosOptions, handshake_url
from chaos.session import ChaosSession
from chaos.wsclient import REFUSED, HandshakeResult, hold_handshake

log = logging.getLogger("handshake-chaos")
_DEFAULTS = ChaosOptions()
# A connection that fails at once (refused, nothing listening) must not become a hot loop.
_FAST_FAILURE_BACKOFF_SECONDS = 0.5
_REPORT_KEY = "handshake_chaos"
_RANDOM = random.Random()
_TERM_MESSAGE = "handshake_chaos_term"
_EXPOSURE_MESSAGE = "handshake_chaos_exposure"


class HandshakeFailed(Exception):
    """How Locust's failure table names a handshake that did not end in an accept."""


@events.init_command_line_parser.add_listener
def _add_options(parser):  # type: ignore[no-untyped-def]
    group = parser.add_argument_group("handshake-chaos")

    def option(flag: str, dest: str, kind: type, help_text: str) -> None:
        default = getattr(_DEFAULTS, dest)
        env_var = "HANDSHAKE_CHAOS_" + dest.upper()
        if kind is bool:
            action = group.add_argument(
                flag, dest=dest, action="store_true", default=default, env_var=env_var, help=help_text
            )
        else:
            action = group.add_argument(
                flag, dest=dest, type=kind, default=default, env_var=env_var, help=f"{help_text} (default: {default})"
            )
        # A group's add_argument is argparse's own, not Locust's: mark the action for the web UI here.
        action.include_in_web_ui = True
        action.is_secret = action.is_required = action.is_multiple = False

    option("--hold-seconds", "hold_seconds", float, "how long the probe app keeps each handshake pending")
    option("--hold-jitter", "hold_jitter", float, "spread of each hold time, as a fraction of it")
    option("--keep-open-seconds", "keep_open_seconds", float, "how long a user keeps an accepted websocket open")
    option("--ws-path", "ws_path", str, "path of the probe route")
    option("--connect-timeout", "connect_timeout", float, "TCP connect timeout, seconds")
    option("--handshake-timeout", "handshake_timeout", float, "seconds to wait for the handshake response")
    option("--max-handshakes", "max_handshakes", int, "upper bound of handshakes per Locust process")
    option("--ws", "ws", str, "uvicorn ws implementation (embedded deployment; the ws label otherwise)")
    option("--workers", "workers", int, "gunicorn workers of the embedded deployment")
    option("--graceful-timeout", "graceful_timeout", int, "gunicorn --graceful-timeout of the embedded deployment")
    option("--target-python", "target_python", str, "interpreter that runs the embedded deployment")
    option("--app", "app", str, "ASGI app (module:attr) of the embedded deployment instead of the probe")
    option("--run-dir", "run_dir", str, "keep the embedded deployment's logs in this directory")
    option("--term-interval", "term_interval", float, "seconds between rolling TERMs")
    option("--term-jitter", "term_jitter", float, "random extra seconds added to each interval")
    option("--min-alive", "min_alive", int, "never signal when fewer workers than this would be left")
    option("--max-signals", "max_signals", int, "stop rolling after this many signals")
    option("--dry-run", "dry_run", bool, "log the signals the controller would send, send none")
    option("--target-pid", "target_pid", int, "gunicorn master pid of the --host deployment, to roll its workers")
    option("--target-pidfile", "target_pidfile", str, "gunicorn pidfile of the --host deployment")
    option("--server-log", "server_log", str, "error log of the --host deployment, for server-side detection")
    option("--release", "release", str, "release label of the metrics (default: the uvicorn version)")
    option("--metrics-host", "metrics_host", str, "address of the /metrics endpoint")
    option("--metrics-port", "metrics_port", int, "port of the /metrics endpoint (0: any free port)")
    option("--gate", "gate", bool, "exit 1 on handshake-time shutdown errors, 3 when no TERM caught a handshake")
    option("--http-rejection-is-error", "http_rejection_is_error", bool, "count HTTP rejections of caught handshakes")
    option("--allow", "allow", str, "tolerated errors for the gate: SIGNATURE=N[,SIGNATURE=N]")
    option("--chaos-report-json", "report_json", str, "write the run summary as JSON to this file")


class _State:
    """This process's part of the run."""

    options: ChaosOptions = _DEFAULTS
    session: ChaosSession | None = None  # local runner or master
    ledger = HandshakeLedger()
    recorder: ClientRecorder | None = None
    attempts = 0
    worker_pending: dict[str, int] = {}


def _options_from(parsed: Any) -> ChaosOptions:
    # Options the controller CLI has but Locust does not (the signal to send) keep their defaults.
    return ChaosOptions(
        **{f.name: getattr(parsed, f.name) for f in dataclasses.fields(ChaosOptions) if hasattr(parsed, f.name)}
    )


@events.init.add_listener
def _on_init(environment, runner, **_kwargs):  # type: ignore[no-untyped-def]
    try:
        _State.options = _options_from(environment.parsed_options)
        if isinstance(runner, WorkerRunner):
            _State.options.validate(host="ws://placeholder")
            _State.recorder = ClientRecorder(_State.options.http_rejection_is_error)
            runner.register_message(_TERM_MESSAGE, _on_term_message)
            return
        session = ChaosSession(_State.options, environment.host or None)
        _State.session = session
        environment.host = session.start()
    except ChaosError as exc:
        log.error("handshake-chaos: %s", exc)
        if _State.session is not None:
            _State.session.close()
        sys.exit(exc.exit_code)
    if isinstance(runner, MasterRunner):
        session.exposure_resolver = functools.partial(_broadcast_signal, runner)
        session.pending_count = lambda: sum(_State.worker_pending.values())
        runner.register_message(_EXPOSURE_MESSAGE, _on_exposure_message)
    else:
        _State.ledger = session.ledger
        _State.recorder = session.recorder
    log.info("handshake-chaos: target %s (%s)", environment.host, "embedded" if session.embedded else "external")


# -- distributed mode -----------------------------------------------------------------


def _broadcast_signal(runner: MasterRunner, record: SignalRecord, peers: frozenset[Address]) -> None:
    """Master: tell every worker which connections the signalled worker held; they answer."""
    if not record.dry_run:
        data = {"id": record.id, "time": record.time, "peers": [list(peer) for peer in peers]}
        runner.send_message(_TERM_MESSAGE, data)
    return None


def _on_term_message(environment, msg, **_kwargs):  # type: ignore[no-untyped-def]
    """Worker: mark its own handshakes the signal caught; answer with how many."""
    data = msg.data
    peers = frozenset((str(host), int(port)) for host, port in data["peers"])
    pending, late = _State.ledger.mark(int(data["id"]), peers, float(data["time"]))
    if _State.recorder is not None:
        _State.recorder.caught_late(late)
    environment.runner.send_message(_EXPOSURE_MESSAGE, {"id": data["id"], "pending": pending})


def _on_exposure_message(environment, msg, **_kwargs):  # type: ignore[no-untyped-def]
    if _State.session is None:
        return
    for record in _State.session.records():
        if record.id == msg.data["id"]:
            record.pending += int(msg.data["pending"])


@events.report_to_master.add_listener
def _report_to_master(client_id, data, **_kwargs):  # type: ignore[no-untyped-def]
    if _State.recorder is not None:
        data[_REPORT_KEY] = {**_State.recorder.take().to_dict(), "pending": len(_State.ledger)}


@events.worker_report.add_listener
def _worker_report(client_id, data, **_kwargs):  # type: ignore[no-untyped-def]
    session = _State.session
    report = data.get(_REPORT_KEY)
    if session is None or report is None:
        return
    session.totals.add_client(ClientDelta.from_dict(report))
    _State.worker_pending[client_id] = int(report.get("pending", 0))


# -- the run's edges ------------------------------------------------------------------


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs):  # type: ignore[no-untyped-def]
    # The web UI may have changed the options since start-up: load and controller
    # settings take effect now (the deployment itself is already running).
    try:
        options = _options_from(environment.parsed_options)
        options.validate(host=environment.host or None)
    except ChaosError as exc:
        log.error("handshake-chaos: %s (keeping the previous options)", exc)
    else:
        _State.options = options
        if _State.session is not None:
            _State.session.update_controller_options(options)
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
    summary = session.summary()
    session.write_report(summary)
    print(format_summary(summary), flush=True)
    if _State.options.gate:
        environment.process_exit_code = summary["gate"]["exit_code"]


# -- the users ------------------------------------------------------------------------


class HandshakeUser(User):
    """Opens a handshake to the probe route, holds it while it is pending, reports how it ended."""

    wait_time = constant(0)

    @task
    def hold_one_handshake(self) -> None:
        options = _State.options
        if _State.attempts >= options.max_handshakes:
            raise StopUser()
        _State.attempts += 1
        result = hold_handshake(
            handshake_url(self.environment.host, options, _RANDOM),
            connect_timeout=options.connect_timeout,
            handshake_timeout=options.hold_seconds * (1 + options.hold_jitter) + options.handshake_timeout,
            keep_open=options.keep_open_seconds,
            ledger=_State.ledger,
        )
        if _State.recorder is not None:
            _State.recorder.finished(result)
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
            context={"status": result.status, "close_code": result.close_code, "exposed_by": result.exposed_by},
        )
