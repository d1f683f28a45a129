"""One chaos run: it composes the deployment, the controller, detection, metrics and the summary.

Independent of Locust so that the Locust plugin, ``controller`` and the tests drive it the
same way. What differs between them is given to the constructor: how exposure is learned
(``ExposureStrategy``) and where the run's counts are kept (``RunTotals``). The pieces it
composes each do one thing: ``AttachedDeployment`` (started here or found), ``MetricsEndpoint``,
the ``ServerDetector`` following the log, ``SignalBook`` (what becomes of each signal),
``Timeline``, and ``build_summary``. Background work runs in threads; under Locust's gevent
monkey-patching those are greenlets, and their sleeps yield to the users.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from chaos import __version__, catalog
from chaos.deployment.families import family
from chaos.deployment.launcher import PROBE_WS_PATH
from chaos.deployment.processes import ServerMaster
from chaos.detect.logfollow import FileTail
from chaos.detect.server import DetectedError, ServerDetector
from chaos.detect.totals import RunTotals
from chaos.errors import UsageError
from chaos.load.client import LoadProfile
from chaos.report.metrics import ChaosCollector, MetricsSnapshot, serve, sums
from chaos.results import MIXED, ErrorRow, FirstSeen, GateResult, Mode, RunSummary, SignalRecord, TargetSummary
from chaos.run.attached import AttachedDeployment, find_external, start_embedded
from chaos.run.controller import RollingSignalController
from chaos.run.exposure import ExposureStrategy
from chaos.run.feed import Feed, guarded
from chaos.run.gate import decide, settled
from chaos.run.options import ChaosOptions
from chaos.run.remote import RemoteControllers, what_runs_there
from chaos.run.signals import SignalBook
from chaos.run.timeline import Timeline
from chaos.scenarios import ScenarioPlan, plan_scenarios

log = logging.getLogger(__name__)

_LOG_POLL_SECONDS = 0.25
_TIMELINE_SECONDS = 1.0
_FEED_POLL_SECONDS = 0.25
_SUMMED_METRICS = (
    "handshake_chaos_handshakes_total",
    "handshake_chaos_shutdown_errors_total",
    "handshake_chaos_signals_total",
)


class MetricsEndpoint:
    """``/metrics`` of the run's registry, served for the run's whole life."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, wrap: Callable[[Any], Any] | None = None
    ) -> None:
        try:
            self._server: Any = serve(registry, host, port, wrap)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ChaosSession:
    def __init__(
        self,
        options: ChaosOptions,
        host: str | None,
        *,
        exposure: ExposureStrategy,
        totals: RunTotals | None = None,
        registry: CollectorRegistry | None = None,
        feed: Feed | None = None,
    ) -> None:
        """``feed``: the controller command's, served beside ``/metrics`` (what Locust on other hosts reads)."""
        options.validate(host)
        self.options = options
        self.host = host
        self.embedded = not host
        self.exposure = exposure
        self.totals = totals if totals is not None else RunTotals()
        self.totals.on_first_seen(_announce_first)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(ChaosCollector(self._metrics_snapshot))
        self.attached: AttachedDeployment | None = None
        self.versions: dict[str, Any] = {}
        self.release = options.release or "unknown"
        self.endpoint: MetricsEndpoint | None = None
        self.detector: ServerDetector | None = None
        self.signals = SignalBook(exposure, None, None)
        self.signals.feed = self.feed = feed
        if feed is not None:
            feed.header = self.feed_header
        self.remote: RemoteControllers | None = None  # --chaos-controller: the deployment's own controllers
        self.plan = ScenarioPlan(tuple(options.scenarios) or ("hold-accept",), {})
        self.started = time.time()
        self.timeline = Timeline(self.started)
        self._stop_controller = threading.Event()
        self._stop_background = threading.Event()
        self._threads: list[threading.Thread] = []
        self._controller_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Start (embedded) or locate (external) the deployment; returns the base URL."""
        if self.embedded:
            self.attached, self.options = start_embedded(self.options)
        elif self.options.controllers:
            assert self.host is not None
            self.attached = self._attach_remote(self.host)
        else:
            assert self.host is not None
            self.attached = find_external(self.options, self.host)
        attached = self.attached
        self.host = attached.host
        self.versions = attached.versions
        self.release = self.options.release or str(self.versions.get("uvicorn") or "unknown")
        try:
            self.plan = self._plan(self.options)
        except UsageError:
            self.close()
            raise
        log.info(
            "handshake-chaos: scenarios %s%s",
            ", ".join(self.plan.running),
            "".join(f"; {name} skipped: {why}" for name, why in self.plan.skipped.items()),
        )
        uvicorn, ws = self.versions.get("uvicorn"), self.ws
        self.totals.judge_regressions(lambda signature: catalog.regression_of(signature, ws, uvicorn))
        feed, token = self.feed, self.options.token
        wrap = (lambda app: guarded(app, feed, token)) if feed is not None else None
        try:
            self.endpoint = MetricsEndpoint(self.registry, self.options.metrics_host, self.options.metrics_port, wrap)
        except UsageError:
            self.close()
            raise
        log.info("handshake-chaos metrics at %s", self.endpoint.url)
        if attached.error_log is not None:
            tail = FileTail(attached.error_log, from_start=self.embedded, line_format=self.options.line_format())
            self.detector = ServerDetector(tail, self._server_error)
        self.signals.attach(attached.listen_port, self.detector, attached.states_dir)
        self._spawn(self._background_loop, "handshake-chaos-detector")
        return self.host

    def _attach_remote(self, host: str) -> AttachedDeployment:
        """The deployment on another host, as its controllers' feeds describe it; their signals are this run's."""
        self.remote = RemoteControllers(self.options.controllers, self.options.token, self.signals, self._server_error)
        header = self.remote.connect()
        versions, adopted = what_runs_there(header, self.remote.readers[0].url)
        self.options = dataclasses.replace(self.options, **adopted)
        log.info(
            "handshake-chaos: reading %s (%s)",
            ", ".join(reader.url for reader in self.remote.readers),
            ", ".join(f"{key} {value}" for key, value in adopted.items()),
        )
        return AttachedDeployment(host, urlsplit(host).port, versions, None)

    def feed_header(self) -> dict[str, Any]:
        """What a controller's feed says of itself: what runs here, and whether it still sends signals."""
        return {
            "versions": self.versions,
            "release": self.release,
            "ws": self.options.ws,
            "mode": self.options.mode,
            "server": self.options.server,
            "host": self.host,
            "scenarios": list(self.plan.running),
            "running": self._controller_thread is not None and self._controller_thread.is_alive(),
            "started": self.started,
        }

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def reconfigure(self, options: ChaosOptions) -> None:
        """Options for the next test start (load, controller, gate, scenarios); the deployment keeps its own."""
        options.validate(None if self.embedded else self.host)
        plan = self._plan(options) if self.attached is not None else self.plan
        self.options, self.plan = options, plan

    def _plan(self, options: ChaosOptions) -> ScenarioPlan:
        """The scenarios that apply to what runs here (a release without the denial extension has no
        deny-stream; a plain deployment no TLS handshake)."""
        spec = family(options.server)
        tls = options.tls or bool(self.host and self.host.startswith(("wss:", "https:")))
        return plan_scenarios(
            options.scenarios,
            versions=self.versions,
            ws=options.ws,
            own_ws=spec.own_ws,
            tls=tls,
            probe_route=options.ws_path == PROBE_WS_PATH,
        )

    def load_profile(self) -> LoadProfile:
        """What each user does in this test: the planned scenarios, by weight."""
        return self.options.load_profile(self.plan.running)

    def _server_error(self, error: DetectedError, controller: str | None = None) -> None:
        """A server-side error, counted under the scenario it can be tied to (or "mixed"), and named by
        the code path it took where its text alone cannot say (``catalog.name_the_path``). ``controller``:
        the feed it came from, when the deployment's log is read on its own host."""
        if self.feed is not None:
            self.feed.server_error(error)  # as the log said it: the reader, who knows the load, names the path
        scenario = self.signals.scenario_of(error.pid, self.plan.running, controller)
        entry = catalog.known(error.signature)
        if entry is not None:
            uvicorn = self.versions.get("uvicorn")
            from_index = bool(self.versions.get("uvicorn_from_index"))
            named = catalog.name_the_path(entry, None if scenario == MIXED else scenario, self.ws, uvicorn, from_index)
            if named is not entry:
                error = dataclasses.replace(error, signature=named.signature, reference=named.reference)
        self.totals.add_server(error, scenario)

    @property
    def master(self) -> ServerMaster | None:
        return self.attached.master if self.attached is not None else None

    @property
    def metrics_url(self) -> str | None:
        return self.endpoint.url if self.endpoint is not None else None

    def start_controller(self) -> None:
        if self.remote is not None and self._controller_thread is None:
            remote = self.remote
            remote.skip_to_now()
            self._stop_controller.clear()
            self._controller_thread = self._spawn(
                lambda: _read_feeds(remote, self._stop_controller), "handshake-chaos-feed"
            )
            return
        if self.master is None or self._controller_thread is not None:
            return
        controller = RollingSignalController(
            self.master,
            self.options.controller_config(),
            snapshot=self.signals.snapshot,
            on_signal=self.signals.on_signal,
            on_replaced=self.signals.on_replaced,
            state=self.signals.state,
            deployment=self.attached.deployment if self.attached is not None else None,
            warm=self.signals.warm,
        )
        self._stop_controller.clear()
        self._controller_thread = self._spawn(lambda: _run(controller, self._stop_controller), "handshake-chaos-ctl")

    def on_signal(self, callback: Callable[[SignalRecord], None]) -> None:
        """``callback(record)`` for each signal the controller sends, its exposure as known then."""
        self.signals.listeners.append(callback)

    def controller_finished(self) -> bool:
        """The controller stopped on its own (max signals reached, or the master is gone; on another host:
        every controller's feed says it stopped)."""
        if self.remote is not None:
            return self._controller_thread is not None and not self.remote.running()
        return self._controller_thread is not None and not self._controller_thread.is_alive()

    def halt_controller(self) -> None:
        """Tells the controller to send nothing more, without waiting for it (``stop_controller`` waits)."""
        self._stop_controller.set()

    def stop_controller(self) -> None:
        thread, self._controller_thread = self._controller_thread, None
        if thread is None:
            return
        self._stop_controller.set()
        thread.join(timeout=self.options.graceful_timeout + 70)

    def close(self) -> None:
        """Stops everything this session started, in order; the counts stay readable."""
        self.stop_controller()
        self.signals.settle_all()
        if self.attached is not None:
            self.timeline.sample(self.totals, self.exposure.pending())  # the run's last moment, all counted
        self._stop_background.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self.attached is not None:
            self.attached.stop()
        if self.detector is not None:
            self.detector.tail.close()
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

    def _background_loop(self) -> None:
        quiet_polls = 0
        next_sample = time.monotonic()
        while not self._stop_background.wait(_LOG_POLL_SECONDS):
            self.signals.settle_ready()
            if time.monotonic() >= next_sample:
                next_sample += _TIMELINE_SECONDS
                self.timeline.sample(self.totals, self.exposure.pending())
            if self.detector is None:
                continue
            quiet_polls = 0 if self.detector.poll() else quiet_polls + 1
            if quiet_polls == 2:
                # The writer has gone quiet: the record in progress (a traceback's tail) is complete.
                self.detector.complete()

    # -- results ---------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self.options.mode

    @property
    def ws(self) -> str:
        """The ws label: uvicorn's implementation, or the server family's own where it has one."""
        return family(self.options.server).ws_label(self.options.ws)

    def records(self) -> list[SignalRecord]:
        return self.signals.records

    def _metrics_snapshot(self) -> MetricsSnapshot | None:
        if self.attached is None:
            return None
        return MetricsSnapshot(
            release=self.release,
            ws=self.ws,
            mode=self.mode,
            versions=self.versions,
            worker_class=self.attached.worker_class(),
            outcomes=self.totals.outcomes_by_scenario(),
            errors=self.totals.error_rows(),
            records=list(self.records()),
            pending=self.exposure.pending(),
            controller_running=self._controller_thread is not None and self._controller_thread.is_alive(),
            server=self.options.server,
            scenarios=self.plan.running,
        )

    def gate(self, interrupted_by: int | None = None) -> GateResult:
        signals = self.signals.state.summary()
        uncaught = [name for name in self.plan.running if not signals.landed_by_scenario.get(name)]
        if len(self.plan.running) == 1:
            uncaught = []  # one scenario: "landed with pending" already says it
        policy = self.options.gate_policy()
        return decide(self.totals.error_rows(), signals.landed_with_pending, policy, interrupted_by, uncaught)

    def settled_verdict(self, since: float = 0.0) -> str | None:
        """Why the verdict of the test started at ``since`` can no longer change (``--until-verdict``), or None."""
        return settled(
            self.totals.error_rows(),
            self.records(),
            self.options.gate_policy(),
            self.options.evidence_policy(),
            self.totals.last_error_time,
            since,
            self.plan.running,
        )

    def summary(self, interrupted_by: int | None = None, stop_reason: str | None = None) -> RunSummary:
        """The run as it stands; ``interrupted_by`` names the signal that stopped it before its end."""
        return build_summary(self, interrupted_by, stop_reason)

    def write_report(self, summary: RunSummary) -> None:
        if self.options.report_json:
            summary.write(Path(self.options.report_json))


def build_summary(session: ChaosSession, interrupted_by: int | None, stop_reason: str | None) -> RunSummary:
    """The run's summary from its pieces, as they stand."""
    signals = session.signals.state.summary()
    exits = Counter(record.exit_kind for record in signals.records if record.exit_kind and not record.dry_run)
    detector, attached = session.detector, session.attached
    return RunSummary(
        release=session.release,
        ws=session.ws,
        mode=session.mode,
        server=session.options.server,
        versions={**session.versions, "handshake_chaos": __version__},
        gate=session.gate(interrupted_by),
        errors=session.totals.error_rows(),
        signals=signals,
        outcomes=session.totals.outcomes(),
        worker_exits=dict(sorted(exits.items())),
        unattributed_server_errors=detector.unattributed_errors if detector else 0,
        ambiguous_server_errors=detector.ambiguous_errors if detector else 0,
        target=TargetSummary(
            url=session.host,
            embedded=session.embedded,
            master_pid=session.master.pid if session.master else None,
            pids=attached.seen_pids(session.records()) if attached else [],
            port=attached.listen_port if attached else None,
            error_log=str(detector.tail.path) if detector else None,
        ),
        metrics_url=session.metrics_url,
        metrics_totals={
            name.removesuffix("_total"): value for name, value in sums(session.registry, _SUMMED_METRICS).items()
        },
        options=session.options.as_dict(),
        duration_seconds=round(time.time() - session.started, 3),
        started=session.started,
        timeline=list(session.timeline.points),
        stop_reason=stop_reason,
        master_events=detector.master_events() if detector else {},
        noise=detector.noise() if detector else {},
        scenarios=list(session.plan.running),
        skipped_scenarios=dict(session.plan.skipped),
        outcomes_by_scenario=session.totals.outcomes_by_scenario(),
    )


def _announce_first(row: ErrorRow) -> None:
    """One console line the first time a signature is seen: what, how many so far, the example, the reference."""
    log.warning("handshake-chaos: %s", FirstSeen.of(row).line())


def _read_feeds(remote: RemoteControllers, stop: threading.Event) -> None:
    """Every controller's new events, folded in as they come, until the test stops (and once more then:
    what the controllers sent up to that moment is this test's)."""
    while not stop.wait(_FEED_POLL_SECONDS):
        try:
            remote.poll()
        except Exception:  # a fault in folding must not take the load down with it
            log.exception("handshake-chaos: reading the controllers' feeds")
    remote.poll()


def _run(controller: RollingSignalController, stop: threading.Event) -> None:
    try:
        controller.run(stop)
    except Exception:  # a controller failure must not take the load down with it
        log.exception("handshake-chaos controller stopped")
