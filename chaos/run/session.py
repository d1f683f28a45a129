"""One chaos run: the deployment (embedded or external), controller, detection, metrics, summary.

Independent of Locust so that the Locust plugin, ``controller`` and the tests drive it the
same way. What differs between them is given to the constructor: how exposure is learned
(``ExposureStrategy``) and where the run's counts are kept (``RunTotals``). Background work
runs in threads; under Locust's gevent monkey-patching those are greenlets, and their
sleeps yield to the users.
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

import psutil
from prometheus_client import CollectorRegistry

from chaos import __version__, catalog
from chaos.deployment.families import family
from chaos.deployment.launcher import Deployment, read_versions
from chaos.deployment.processes import GunicornMaster, read_pidfile, worker_peers
from chaos.detect.logfollow import FileTail
from chaos.detect.server import EXIT_SEVERITY, ServerDetector
from chaos.detect.totals import RunTotals
from chaos.errors import ChaosError, UsageError
from chaos.report.metrics import ChaosCollector, MetricsSnapshot, serve, sums
from chaos.results import (
    Address,
    ErrorRow,
    ExitKind,
    FirstSeen,
    GateResult,
    Mode,
    Reach,
    RunSummary,
    SignalRecord,
    TargetSummary,
    TimelinePoint,
)
from chaos.run.controller import ControllerState, RollingTermController
from chaos.run.exposure import ExposureStrategy
from chaos.run.gate import decide, settled
from chaos.run.options import ChaosOptions

log = logging.getLogger(__name__)

_LOG_POLL_SECONDS = 0.25
_TIMELINE_SECONDS = 1.0
_TIMELINE_POINTS = 3600  # past this, every other point is dropped: the page stays small
_SUMMED_METRICS = (
    "handshake_chaos_handshakes_total",
    "handshake_chaos_shutdown_errors_total",
    "handshake_chaos_signals_total",
)


class ChaosSession:
    def __init__(
        self,
        options: ChaosOptions,
        host: str | None,
        *,
        exposure: ExposureStrategy,
        totals: RunTotals | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        options.validate(host)
        self.options = options
        self.host = host
        self.embedded = not host
        self.exposure = exposure
        self.totals = totals if totals is not None else RunTotals()
        self.totals.on_first_seen(_announce_first)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(ChaosCollector(self._metrics_snapshot))
        self.deployment: Deployment | None = None
        self._external_master: GunicornMaster | None = None
        self.listen_port: int | None = None
        self.versions: dict[str, Any] = {}
        self.release = options.release or "unknown"
        self.metrics_url: str | None = None
        self.detector: ServerDetector | None = None
        # One state for the whole session: signal ids stay unique across controller restarts.
        self.controller_state = ControllerState()
        self._labelled = False
        self._log_positions: dict[int, tuple[int, int]] = {}
        self._unsettled: list[SignalRecord] = []
        self._signal_listeners: list[Callable[[SignalRecord], None]] = []
        self._stop_controller = threading.Event()
        self._stop_background = threading.Event()
        self._threads: list[threading.Thread] = []
        self._controller_thread: threading.Thread | None = None
        self._metrics_server: Any = None
        self.started = time.time()
        self.timeline: list[TimelinePoint] = []

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Start (embedded) or locate (external) the deployment; returns the base URL."""
        if self.embedded:
            self.deployment = Deployment(self.options.target_config()).start()
            self.listen_port = self.deployment.port
            self.host = self.deployment.url
            self.versions = dict(self.deployment.versions)
            # A deployment logging through its own config writes where that config says (--server-log).
            error_log: Path | None = (
                Path(self.options.server_log) if self.options.server_log else self.deployment.error_log
            )
            if self.deployment.ca_file is not None and self.options.ca_file is None:
                # The users trust the deployment's throwaway CA, and only that.
                self.options = dataclasses.replace(self.options, ca_file=str(self.deployment.ca_file))
        else:
            assert self.host is not None
            self.listen_port = urlsplit(self.host).port
            if self.options.target_pid is not None:
                self._external_master = GunicornMaster(self.options.target_pid)
            elif self.options.target_pidfile is not None:
                self._external_master = GunicornMaster(read_pidfile(self.options.target_pidfile))
            if self.master is not None:
                self.versions = _versions_of(self.master)
            error_log = Path(self.options.server_log) if self.options.server_log else None
        self.release = self.options.release or str(self.versions.get("uvicorn") or "unknown")
        uvicorn, ws = self.versions.get("uvicorn"), self.ws
        self.totals.judge_regressions(lambda signature: catalog.regression_of(signature, ws, uvicorn))
        self._labelled = True
        self._serve_metrics()
        if error_log is not None:
            tail = FileTail(error_log, from_start=self.embedded, line_format=self.options.line_format())
            self.detector = ServerDetector(tail, self.totals.add_server)
        self._spawn(self._background_loop, "handshake-chaos-detector")
        return self.host

    def _serve_metrics(self) -> None:
        try:
            self._metrics_server = serve(self.registry, self.options.metrics_host, self.options.metrics_port)
        except OSError as exc:
            self.close()
            where = f"{self.options.metrics_host}:{self.options.metrics_port}"
            raise UsageError(f"cannot serve metrics on {where}: {exc.strerror}") from None
        host, port = self._metrics_server.server_address[:2]
        self.metrics_url = f"http://{host}:{port}/metrics"
        log.info("handshake-chaos metrics at %s", self.metrics_url)

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def reconfigure(self, options: ChaosOptions) -> None:
        """Options for the next test start (load, controller, gate); the deployment keeps its own."""
        options.validate(None if self.embedded else self.host)
        self.options = options

    @property
    def master(self) -> GunicornMaster | None:
        """The master signals go to: the embedded deployment's oldest live one, or the one named."""
        return self.deployment.master if self.deployment is not None else self._external_master

    def start_controller(self) -> None:
        if self.master is None or self._controller_thread is not None:
            return
        controller = RollingTermController(
            self.master,
            self.options.controller_config(),
            snapshot=self._snapshot,
            on_signal=self._on_signal,
            on_replaced=self._on_replaced,
            state=self.controller_state,
            deployment=self.deployment,
        )
        self._stop_controller.clear()
        self._controller_thread = self._spawn(lambda: _run(controller, self._stop_controller), "handshake-chaos-ctl")

    def controller_finished(self) -> bool:
        """The controller stopped on its own (max signals reached, or the master is gone)."""
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
        """Stops everything this session started; the counts stay readable."""
        self.stop_controller()
        for record in self.records():
            record.settled = True  # no more answers are coming: the metrics count every signal now
        if self.detector is not None:
            # Before the deployment stops: its own shutdown is not part of the run.
            self.detector.drain()
        for record in self._unsettled:
            self._settle_exit(record)
        self._unsettled.clear()
        if self._labelled:
            self._sample()  # the run's last moment, with everything counted
        self._stop_background.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self.deployment is not None:
            self.deployment.stop()
        if self.detector is not None:
            self.detector.tail.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    def on_signal(self, callback: Callable[[SignalRecord], None]) -> None:
        """``callback(record)`` for each signal the controller sends, its exposure as known then."""
        self._signal_listeners.append(callback)

    # -- the controller's hooks ------------------------------------------------------

    def _snapshot(self, pid: int) -> frozenset[Address]:
        if self.detector is not None:
            self._log_positions[pid] = self.detector.tail.position()
        return worker_peers(pid, self.listen_port) if self.listen_port else frozenset()

    def _on_signal(self, record: SignalRecord, peers_by_worker: dict[int, frozenset[Address]]) -> int | None:
        """Opens a shutdown window on every worker the signal reached and counts what each held pending."""
        total: int | None = 0
        for pid, peers in peers_by_worker.items():
            position = self._log_positions.pop(pid, None)
            if not record.dry_run and self.detector is not None:
                self.detector.open_window(pid, position)
            pending = self.exposure.resolve(record, peers)
            record.reach.append(Reach(pid, pending))
            total = None if pending is None or total is None else total + pending
        for listener in self._signal_listeners:
            listener(dataclasses.replace(record, pending=record.pending if total is None else total))
        return total

    def _on_replaced(self, record: SignalRecord) -> None:
        record.settled = True
        if self.detector is not None:
            self.detector.poll()
            if any(self.detector.exit_kind(reach.pid) is None for reach in record.reach):
                # The master has not logged its verdict yet (the run is stopping): settle at close.
                self._unsettled.append(record)
                return
        self._settle_exit(record)

    def _settle_exit(self, record: SignalRecord) -> None:
        """How each reached worker exited; the record keeps the most severe."""
        kinds: list[ExitKind] = []
        for reach in record.reach:
            kind: ExitKind = (self.detector.exit_kind(reach.pid) if self.detector else None) or "unknown"
            reach.exit_kind = kind
            kinds.append(kind)
        worst: ExitKind = max(kinds, key=_severity) if kinds else "unknown"
        record.exit_kind = worst

    def _sample(self) -> None:
        errors = {f"{row.side}:{row.signature}": row.count for row in self.totals.error_rows()}
        handshakes = sum(self.totals.outcomes().values())
        point = TimelinePoint(round(time.time() - self.started, 2), self.exposure.pending(), handshakes, errors)
        self.timeline.append(point)
        if len(self.timeline) > _TIMELINE_POINTS:
            self.timeline[:] = self.timeline[::2]

    def _background_loop(self) -> None:
        quiet_polls = 0
        next_sample = time.monotonic()
        while not self._stop_background.wait(_LOG_POLL_SECONDS):
            if time.monotonic() >= next_sample:
                next_sample += _TIMELINE_SECONDS
                self._sample()
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
        """The ws label: uvicorn's implementation, or gunicorn's own for its ASGI worker (no choice there)."""
        return family(self.options.server).ws_label(self.options.ws)

    def records(self) -> list[SignalRecord]:
        return self.controller_state.records

    def worker_class(self) -> str:
        return self.deployment.worker_base() if self.deployment else "external"

    def _metrics_snapshot(self) -> MetricsSnapshot | None:
        if not self._labelled:
            return None
        return MetricsSnapshot(
            release=self.release,
            ws=self.ws,
            mode=self.mode,
            versions=self.versions,
            worker_class=self.worker_class(),
            outcomes=self.totals.outcomes(),
            errors=self.totals.error_rows(),
            records=list(self.records()),
            pending=self.exposure.pending(),
            controller_running=self._controller_thread is not None and self._controller_thread.is_alive(),
            server=self.options.server,
        )

    def seen_pids(self) -> list[int]:
        if not self.embedded:
            return []
        pids: set[int] = set(self.deployment.seen_pids) if self.deployment else set()
        if self.master is not None:
            pids.add(self.master.pid)
        for record in self.records():
            pids.add(record.worker_pid)
            pids.update(pid for pid in (record.replacement_pid, record.master_pid) if pid)
        return sorted(pids)

    def gate(self, interrupted_by: int | None = None) -> GateResult:
        signals = self.controller_state.summary()
        return decide(self.totals.error_rows(), signals.landed_with_pending, self.options.gate_policy(), interrupted_by)

    def settled_verdict(self, since: float = 0.0) -> str | None:
        """Why the verdict of the test started at ``since`` can no longer change (``--until-verdict``), or None."""
        return settled(
            self.totals.error_rows(),
            self.records(),
            self.options.gate_policy(),
            self.options.evidence_policy(),
            self.totals.last_error_time,
            since,
        )

    def summary(self, interrupted_by: int | None = None, stop_reason: str | None = None) -> RunSummary:
        """The run as it stands; ``interrupted_by`` names the signal that stopped it before its end."""
        signals = self.controller_state.summary()
        exits = Counter(record.exit_kind for record in signals.records if record.exit_kind and not record.dry_run)
        return RunSummary(
            release=self.release,
            ws=self.ws,
            mode=self.mode,
            server=self.options.server,
            versions={**self.versions, "handshake_chaos": __version__},
            gate=self.gate(interrupted_by),
            errors=self.totals.error_rows(),
            signals=signals,
            outcomes=self.totals.outcomes(),
            worker_exits=dict(sorted(exits.items())),
            unattributed_server_errors=self.detector.unattributed_errors if self.detector else 0,
            ambiguous_server_errors=self.detector.ambiguous_errors if self.detector else 0,
            target=TargetSummary(
                url=self.host,
                embedded=self.embedded,
                master_pid=self.master.pid if self.master else None,
                pids=self.seen_pids(),
                port=self.listen_port,
                error_log=str(self.detector.tail.path) if self.detector else None,
            ),
            metrics_url=self.metrics_url,
            metrics_totals={
                name.removesuffix("_total"): value for name, value in sums(self.registry, _SUMMED_METRICS).items()
            },
            options=self.options.as_dict(),
            duration_seconds=round(time.time() - self.started, 3),
            started=self.started,
            timeline=list(self.timeline),
            stop_reason=stop_reason,
            master_events=self.detector.master_events() if self.detector else {},
            noise=self.detector.noise() if self.detector else {},
        )

    def write_report(self, summary: RunSummary) -> None:
        if self.options.report_json:
            summary.write(Path(self.options.report_json))


def _severity(kind: ExitKind) -> int:
    return EXIT_SEVERITY.get(kind, -1)


def _announce_first(row: ErrorRow) -> None:
    """One console line the first time a signature is seen: what, how many so far, the example, the reference."""
    log.warning("handshake-chaos: %s", FirstSeen.of(row).line())


def _run(controller: RollingTermController, stop: threading.Event) -> None:
    try:
        controller.run(stop)
    except Exception:  # a controller failure must not take the load down with it
        log.exception("handshake-chaos controller stopped")


def _versions_of(master: GunicornMaster) -> dict[str, Any]:
    """Versions as the external deployment's own interpreter reports them."""
    try:
        return read_versions(master.process().exe())
    except (psutil.Error, ChaosError) as exc:  # best effort: the run goes on without them
        log.warning("could not read the deployment's versions: %s", exc)
        return {}
