"""Locust users that hold websocket handshakes pending while a controller signals the workers.

Registers the handshake-chaos options on Locust's parser (and its web UI), starts the run
at ``init``, re-reads the test-scope options at every test start (what a user edited in
the web UI's start form), and stops everything at ``quitting`` with the summary and, with
``--gate``, the gate's exit code.

In distributed mode (``--master``/``--worker``, ``--processes``) the master owns the
deployment, the controller, the log follower and the metrics; workers judge their own
handshakes (``chaos.locust_plugin.distributed``).
"""

from __future__ import annotations

# Locust first: it monkey-patches the standard library for gevent.
import locust  # noqa: F401
from locust import User, constant, events, task
from locust.exception import StopUser
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

import logging
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent

from chaos.detect.client import ClientRecorder
from chaos.detect.totals import RunTotals
from chaos.errors import ChaosError
from chaos.linux import require_linux
from chaos.load.client import HandshakeResult, LoadProfile, hold_one
from chaos.load.ledger import HandshakeLedger
from chaos.locust_plugin import webui
from chaos.locust_plugin.distributed import BroadcastExposure, WorkerSide
from chaos.optionmodel import add_to_locust, build, with_test_scope
from chaos.report.ci import append_step_summary, soak_suite, write_junit
from chaos.report.files import markdown_report
from chaos.report.text import format_summary
from chaos.results import REFUSED, RunSummary
from chaos.run.events import RunEvents
from chaos.run.exposure import ExposureStrategy, LocalExposure
from chaos.run.options import ChaosOptions, check_host_url
from chaos.run.session import ChaosSession

log = logging.getLogger("handshake-chaos")
# A connection that fails at once (refused, nothing listening) must not become a hot loop.
_FAST_FAILURE_BACKOFF_SECONDS = 0.5


class HandshakeFailed(Exception):
    """How Locust's failure table names a handshake that did not end in an accept."""


@dataclass
class _ProcessPart:
    """This Locust process's part of the run (Locust's events are process-wide)."""

    options: ChaosOptions = field(default_factory=ChaosOptions)
    profile: LoadProfile = field(default_factory=LoadProfile)
    session: ChaosSession | None = None  # local runner or master
    events: RunEvents | None = None  # --chaos-events: the session's events, as they happen
    ledger: HandshakeLedger = field(default_factory=HandshakeLedger)
    recorder: ClientRecorder | None = None
    broadcast: BroadcastExposure | None = None
    worker: WorkerSide | None = None
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)
    sigterm_seen: bool = False
    reset_on_spawned: bool = False  # Locust's --reset-stats
    # Set as the run stops: what users see from then on is the tool's own teardown, not the target.
    stopping: bool = False
    stop_reason: str | None = None  # --until-verdict: why the verdict settled
    verdict_watch: Any = None  # the greenlet that checks it
    host_refused: bool = False  # this test's Host field was blank with nothing to go to, or no URL

    def use(self, options: ChaosOptions, environment: Any = None) -> None:
        """The options of this test; the users' profile plays the scenarios the run planned. A Locust
        master hands its plan to its workers with the options it sends them at every spawn."""
        self.options = options
        if self.session is None:
            # A Locust worker plays what its master planned (sent with the options of every spawn).
            planned = getattr(getattr(environment, "parsed_options", None), _PLANNED, None)
            self.profile = options.load_profile(str(planned).split(",") if planned else None)
            return
        self.profile = self.session.load_profile()
        if environment is not None:
            setattr(environment.parsed_options, _PLANNED, ",".join(self.profile.scenarios))


_PART = _ProcessPart()
# The scenarios a master planned, carried to its workers in the parsed options Locust sends them.
_PLANNED = "handshake_chaos_planned_scenarios"
_VERDICT_POLL_SECONDS = 0.5


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    add_to_locust(parser, ChaosOptions)


class _SigtermNoted(logging.Handler):
    """Tells a SIGTERM stop (exit 143) from a Ctrl-C (130): Locust's own SIGTERM handler logs this
    line just before it shuts down, in the same greenlet."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "Got SIGTERM signal":
            _PART.sigterm_seen = True


def _interrupt_main() -> None:
    """Ctrl-C, delivered where Locust waits for it.

    Python raises KeyboardInterrupt in whichever greenlet happens to run when SIGINT arrives; when
    that is the web UI answering a request, the exception ends that request only and Locust never
    stops. A gevent signal handler runs in a greenlet of its own and throws it into the main one.
    """
    gevent.get_hub().parent.throw(KeyboardInterrupt)


def _live_summary() -> RunSummary | None:
    return _PART.session.summary() if _PART.session is not None else None


@events.init.add_listener
def _on_init(environment: Any, runner: Any, web_ui: Any = None, **_kwargs: Any) -> None:
    logging.getLogger("locust.main").addHandler(_SigtermNoted())
    if not isinstance(runner, WorkerRunner) and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        gevent.signal_handler(signal.SIGINT, _interrupt_main)
    _PART.reset_on_spawned = bool(getattr(environment, "reset_stats", False))
    try:
        require_linux()
        options = build(ChaosOptions, vars(environment.parsed_options), "locust")
        _PART.use(options)
        if isinstance(runner, WorkerRunner):
            options.validate(host="ws://the-master-decides")
            _PART.recorder = ClientRecorder(options.wire_judgement())
            _PART.worker = WorkerSide(runner, _PART.ledger, _PART.recorder)
            return
        totals = RunTotals()
        exposure: ExposureStrategy
        if isinstance(runner, MasterRunner):
            exposure = _PART.broadcast = BroadcastExposure(runner)
        else:
            local = LocalExposure(ClientRecorder(options.wire_judgement(), sink=totals.add_client), _PART.ledger)
            _PART.recorder = local.recorder
            exposure = local
        _PART.session = ChaosSession(options, environment.host or None, exposure=exposure, totals=totals)
        if options.events_file:
            _PART.events = RunEvents(Path(options.events_file), _PART.session)
        environment.host = _PART.session.start()
        # What the session settled at start (the embedded TLS deployment's CA) is what the users,
        # every later test start and the Locust workers (sent these options by the master) use.
        environment.parsed_options.ca_file = _PART.session.options.ca_file
        _PART.use(_PART.session.options, environment)
        if web_ui is not None:
            webui.attach(web_ui, _live_summary)
        if _PART.events is not None:
            _PART.events.started()
    except ChaosError as exc:
        log.error("handshake-chaos: %s", exc)
        if _PART.session is not None:
            _PART.session.close()
        if _PART.events is not None:
            _PART.events.close()
        sys.exit(exc.exit_code)
    kind = "embedded" if _PART.session.embedded else "external"
    log.info("handshake-chaos: target %s (%s)", environment.host, kind)


@events.report_to_master.add_listener
def _report_to_master(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    if _PART.worker is not None:
        _PART.worker.report(data)


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    if _PART.session is not None and _PART.broadcast is not None:
        _PART.broadcast.worker_report(_PART.session.totals, client_id, data)


@events.reset_stats.add_listener
def _on_reset_stats(**_kwargs: Any) -> None:
    if _PART.session is not None:
        _PART.session.totals.reset()


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count: int, **_kwargs: Any) -> None:
    # --reset-stats resets Locust's stats here without firing reset_stats.
    if _PART.session is not None and _PART.reset_on_spawned:
        _PART.session.totals.reset()


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kwargs: Any) -> None:
    # The web UI's start form may have changed the test-scope options since start-up: they
    # take effect now (the deployment itself is already running with its own).
    try:
        options = with_test_scope(_PART.options, vars(environment.parsed_options))
        if _PART.session is not None:
            _PART.session.reconfigure(options)
    except ChaosError as exc:
        log.error("handshake-chaos: %s (keeping the previous options)", exc)
    else:
        _PART.use(options, environment)
        log.info(
            "handshake-chaos: test start with term interval %gs, max signals %s, hold %gs, scenarios %s",
            options.term_interval,
            "unbounded" if options.max_signals is None else options.max_signals,
            options.hold_seconds,
            ",".join(_PART.profile.scenarios),
        )
    _PART.host_refused = not _settle_host(environment)
    if _PART.host_refused:
        if _PART.worker is None:  # a Locust worker's users just stay idle: its master stops the test
            gevent.spawn(environment.runner.stop)  # one line said why; no user runs against nothing
        return
    if _PART.session is not None:
        _PART.session.start_controller()
        if _PART.options.until_verdict and _PART.verdict_watch is None:
            _PART.stop_reason = None
            _PART.verdict_watch = gevent.spawn(_watch_verdict, environment, time.time())


def _settle_host(environment: Any) -> bool:
    """The host the users of this test go to, as the start form left it (Locust posts a blank field as "").

    Blank means the deployment the run started with: the embedded one, whose URL the users get back.
    Without one, or with a host that is not a URL, one clear line in the log and no test."""
    session = _PART.session
    host = (environment.host or "").strip()
    if not host:
        if session is not None and session.embedded and session.host:
            environment.host = session.host
            log.info(
                "handshake-chaos: the Host field is blank: the users go to the embedded deployment, %s", session.host
            )
            return True
        log.error("handshake-chaos: the Host field is blank: give the deployment's ws:// URL, then Start again")
        return False
    try:
        check_host_url(host)
    except ChaosError as exc:
        log.error("handshake-chaos: %s; fix the Host field, then Start again", exc)
        return False
    return True


def _watch_verdict(environment: Any, test_started: float) -> None:
    """--until-verdict: ends the test as soon as its verdict can no longer change.

    Headless, that ends the run (Locust quits, as at the end of --run-time); in the web UI it
    stops the test and the UI stays up with the verdict on its Chaos tab.
    """
    try:
        while True:
            gevent.sleep(_VERDICT_POLL_SECONDS)
            session, runner = _PART.session, environment.runner
            if session is None or runner is None or runner.state not in (STATE_SPAWNING, STATE_RUNNING):
                return
            if not _PART.options.until_verdict:
                continue  # turned off in the web UI's form for this test
            reason = session.settled_verdict(test_started)
            if reason is not None:
                _PART.stop_reason = reason
                log.info("handshake-chaos: %s; stopping the run", reason)
                if _PART.events is not None:
                    _PART.events.verdict_settled(reason)
                # Nothing after this can change the verdict: no more signals. The users still finish the
                # handshakes they hold (--stop-timeout), so the deployment then stops without waiting on them.
                session.halt_controller()
                if getattr(environment.parsed_options, "headless", False):
                    runner.quit()
                else:
                    runner.stop()
                return
    finally:
        _PART.verdict_watch = None


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_kwargs: Any) -> None:
    if _PART.session is not None:
        _PART.session.stop_controller()


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kwargs: Any) -> None:
    """Stops what the run started, in order: users, then controller, then deployment; then the summary."""
    session, _PART.session = _PART.session, None
    events, _PART.events = _PART.events, None
    _PART.stopping = True
    if session is None:
        return
    if events is not None:
        events.stop_progress()  # the counts from here on are the teardown's; the summary has the run's
    runner = environment.runner
    # Still running at quitting: a signal (Ctrl-C, SIGTERM) stopped it, not its run time or the web UI.
    interrupted_by = None
    if runner is not None and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        interrupted_by = signal.SIGTERM if _PART.sigterm_seen else signal.SIGINT
        log.info(
            "handshake-chaos: stopping on %s: users, then the controller, then the deployment", interrupted_by.name
        )
        runner.stop()
    session.close()
    if _PART.stop_reason is not None:
        stop_reason = _PART.stop_reason
    elif interrupted_by is not None:
        stop_reason = f"interrupted by {interrupted_by.name}"
    elif getattr(environment.parsed_options, "headless", False) and getattr(
        environment.parsed_options, "run_time", None
    ):
        stop_reason = "its run time ran out (-t, soak's --duration)"
    else:
        stop_reason = "stopped (the web UI, or the end of its test)"
    summary = session.summary(interrupted_by, stop_reason)
    session.write_report(summary)
    if events is not None:
        events.finish(summary)
    print(format_summary(summary), flush=True)
    _ci_outputs(summary)
    if _PART.options.gate:
        environment.process_exit_code = summary.gate.exit_code


def _ci_outputs(summary: RunSummary) -> None:
    """--junit-xml: the gate's checks; with --gate, the report appended to $GITHUB_STEP_SUMMARY when set."""
    options = _PART.options
    try:
        if options.junit_xml:
            write_junit(soak_suite(summary, options.gate_policy().allow, "locust"), Path(options.junit_xml))
        if options.gate:
            append_step_summary(markdown_report(summary))
    except OSError as exc:
        log.error("handshake-chaos: cannot write the CI outputs: %s", exc)


class HandshakeUser(User):
    """Opens a handshake to the probe route, holds it while it is pending, reports how it ended."""

    wait_time = constant(0)

    @task
    def hold_one_handshake(self) -> None:
        if _PART.attempts >= _PART.options.max_handshakes or _PART.host_refused:
            raise StopUser()
        _PART.attempts += 1
        result = hold_one(self.environment.host, _PART.profile, _PART.rng, _PART.ledger)
        if _PART.stopping:
            return  # ended by the tool's own teardown: not an outcome of the target's
        if _PART.recorder is not None:
            _PART.recorder.finished(result)
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
