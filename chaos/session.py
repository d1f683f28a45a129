"""One chaos run: the deployment (embedded or external), controller, detection, metrics, summary.

Independent of Locust so that the locustfile, ``soak`` and the tests drive it the
same way. Background work runs in threads; under Locust's gevent monkey-patching
those are greenlets, and their sleeps yield to the users.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from prometheus_client import CollectorRegistry

from chaos import __version__
from chaos.accounting import ClientRecorder, RunTotals
from chaos.controller import ControllerState, RollingTermController, SignalRecord
from chaos.detection import ServerDetector
from chaos.errors import ChaosError, UsageError
from chaos.exposure import Address, HandshakeLedger, worker_peers
from chaos.gate import GateResult, decide
from chaos.launcher import Target, read_versions
from chaos.logfollow import FileTail
from chaos.metrics import ChaosMetrics, serve, totals
from chaos.options import ChaosOptions
from chaos.processes import GunicornMaster, read_pidfile

log = logging.getLogger(__name__)

_LOG_POLL_SECONDS = 0.25


ExposureResolver = Callable[[SignalRecord, frozenset[Address]], "int | None"]


class ChaosSession:
    def __init__(self, options: ChaosOptions, host: str | None, registry: CollectorRegistry | None = None) -> None:
        options.validate(host)
        self.options = options
        self.host = host
        self.embedded = not host
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ledger = HandshakeLedger()
        self.target: Target | None = None
        self.master: GunicornMaster | None = None
        self.listen_port: int | None = None
        self.versions: dict[str, Any] = {}
        self.release = options.release or "unknown"
        self.metrics: ChaosMetrics | None = None
        self.metrics_url: str | None = None
        self.totals = RunTotals()
        self.recorder = ClientRecorder(options.http_rejection_is_error, sink=self.totals.add_client)
        self.detector: ServerDetector | None = None
        self.controller: RollingTermController | None = None
        self.controller_state = ControllerState()
        # Local runs attribute exposure through this process's ledger; a Locust master
        # replaces this with a broadcast to its workers.
        self.exposure_resolver: ExposureResolver = self._resolve_locally
        # Likewise the handshakes in flight right now: this process's, or the workers' sum.
        self.pending_count: Callable[[], int] = lambda: len(self.ledger)
        self.worker_exits: Counter[str] = Counter()
        self._log_positions: dict[int, tuple[int, int]] = {}
        self._unsettled: list[SignalRecord] = []
        self._stop_controller = threading.Event()
        self._stop_background = threading.Event()
        self._threads: list[threading.Thread] = []
        self._controller_thread: threading.Thread | None = None
        self._metrics_server: Any = None
        self.started = time.time()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Start (embedded) or locate (external) the deployment; returns the base URL."""
        if self.embedded:
            self.target = Target(self.options.target_config()).start()
            self.master = self.target.master
            self.listen_port = self.target.port
            self.host = self.target.url
            self.versions = dict(self.target.versions)
            error_log: Path | None = self.target.error_log
        else:
            assert self.host is not None
            self.listen_port = urlsplit(self.host).port
            if self.options.target_pid is not None:
                self.master = GunicornMaster(self.options.target_pid)
            elif self.options.target_pidfile is not None:
                self.master = GunicornMaster(read_pidfile(self.options.target_pidfile))
            if self.master is not None:
                self.versions = _versions_of(self.master)
            error_log = Path(self.options.server_log) if self.options.server_log else None
        self.release = self.options.release or str(self.versions.get("uvicorn") or "unknown")
        self.metrics = ChaosMetrics(self.registry, self.release, self.options.ws)
        self.totals.metrics = self.metrics
        worker_class = self.target.worker_base() if self.target else "external"
        self.metrics.set_target(self.versions, worker_class)
        self._serve_metrics()
        if error_log is not None:
            self.detector = ServerDetector(FileTail(error_log, from_start=self.embedded), self.totals.add_server)
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

    def update_controller_options(self, options: ChaosOptions) -> None:
        """New interval, jitter, min-alive and dry-run for the next controller start."""
        self.options = dataclasses.replace(
            self.options,
            term_interval=options.term_interval,
            term_jitter=options.term_jitter,
            min_alive=options.min_alive,
            dry_run=options.dry_run,
        )

    def start_controller(self) -> None:
        if self.master is None or self._controller_thread is not None:
            return
        self.controller = RollingTermController(
            self.master,
            self.options.controller_config(),
            snapshot=self._snapshot,
            on_signal=self._on_signal,
            on_replaced=self._on_replaced,
            state=self.controller_state,
        )
        self._stop_controller.clear()
        controller = self.controller
        self._controller_thread = self._spawn(lambda: _run(controller, self._stop_controller), "handshake-chaos-ctl")

    def controller_finished(self) -> bool:
        """The controller stopped on its own (max signals reached, or the master is gone)."""
        return self._controller_thread is not None and not self._controller_thread.is_alive()

    def stop_controller(self) -> None:
        thread, self._controller_thread = self._controller_thread, None
        if thread is None:
            return
        self._stop_controller.set()
        thread.join(timeout=self.options.graceful_timeout + 70)

    def close(self) -> None:
        """Stops everything this session started; the counts stay readable."""
        self.stop_controller()
        if self.detector is not None:
            # Before the deployment stops: its own shutdown is not part of the run.
            self.detector.drain()
        for record in self._unsettled:
            self._settle_exit(record)
        self._unsettled.clear()
        self._stop_background.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self.target is not None:
            self.target.stop()
        if self.detector is not None:
            self.detector.tail.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    # -- the controller's hooks ------------------------------------------------------

    def _snapshot(self, pid: int) -> frozenset[Address]:
        if self.detector is not None:
            self._log_positions[pid] = self.detector.tail.position()
        return worker_peers(pid, self.listen_port) if self.listen_port else frozenset()

    def _on_signal(self, record: SignalRecord, peers: frozenset[Address]) -> int | None:
        position = self._log_positions.pop(record.worker_pid, None)
        if not record.dry_run:
            if self.metrics is not None:
                self.metrics.signal_sent(record.signal, record.role)
            if self.detector is not None:
                self.detector.open_window(record.worker_pid, position)
        return self.exposure_resolver(record, peers)

    def _resolve_locally(self, record: SignalRecord, peers: frozenset[Address]) -> int:
        pending, late = self.ledger.mark(record.id, peers, record.time, commit=not record.dry_run)
        self.recorder.caught_late(late)
        return pending

    def _on_replaced(self, record: SignalRecord) -> None:
        if self.metrics is not None:
            self.metrics.signal_settled(record.signal, record.role, record.pending, record.replacement_seconds)
        if self.detector is not None:
            self.detector.poll()
            if self.detector.exit_kind(record.worker_pid) is None:
                # The master has not logged its verdict yet (the run is stopping): settle at close.
                self._unsettled.append(record)
                return
        self._settle_exit(record)

    def _settle_exit(self, record: SignalRecord) -> None:
        kind = (self.detector.exit_kind(record.worker_pid) if self.detector else None) or "unknown"
        record.exit_kind = kind
        self.worker_exits[kind] += 1
        if self.metrics is not None:
            self.metrics.worker_exited(kind)

    def _background_loop(self) -> None:
        quiet_polls = 0
        while not self._stop_background.wait(_LOG_POLL_SECONDS):
            if self.metrics is not None:
                self.metrics.set_pending(self.pending_count())
            if self.detector is None:
                continue
            quiet_polls = 0 if self.detector.poll() else quiet_polls + 1
            if quiet_polls == 2:
                # The writer has gone quiet: the record in progress (a traceback's tail) is complete.
                self.detector.complete()

    # -- results ---------------------------------------------------------------------

    def records(self) -> list[SignalRecord]:
        return self.controller_state.records

    def seen_pids(self) -> list[int]:
        pids: set[int] = set(self.target.seen_pids) if self.target else set()
        if self.master is not None and self.embedded:
            pids.add(self.master.pid)
        for record in self.records():
            if self.embedded:
                pids.add(record.worker_pid)
                if record.replacement_pid:
                    pids.add(record.replacement_pid)
        return sorted(pids)

    def gate(self) -> GateResult:
        return decide(self.totals.error_rows(), self.controller_state.landed_with_pending, self.options.gate_policy())

    def summary(self) -> dict[str, Any]:
        state = self.controller_state
        records = state.records
        return {
            "release": self.release,
            "ws": self.options.ws,
            "versions": {**self.versions, "handshake_chaos": __version__},
            "gate": self.gate().as_dict(),
            "errors": self.totals.error_rows(),
            "signals": {
                "sent": state.sent,
                "dry_run": len(records) - state.sent,
                "landed_with_pending": state.landed_with_pending,
                "pending_at_term": [record.pending for record in records],
                "records": [record.as_dict() for record in records],
            },
            "outcomes": dict(sorted(self.totals.outcomes.items())),
            "worker_exits": dict(sorted(self.worker_exits.items())),
            "unattributed_server_errors": self.detector.unattributed_errors if self.detector else 0,
            "target": {
                "url": self.host,
                "embedded": self.embedded,
                "master_pid": self.master.pid if self.master else None,
                "pids": self.seen_pids(),
                "port": self.listen_port,
                "error_log": str(self.detector.tail.path) if self.detector else None,
            },
            "metrics_url": self.metrics_url,
            "metrics_totals": self._metrics_totals(),
            "options": asdict(self.options),
            "duration_seconds": round(time.time() - self.started, 3),
        }

    def _metrics_totals(self) -> dict[str, float]:
        """What /metrics says in total: the same counts as above, or a bug."""
        return {
            name: sum(totals(self.registry, f"{name}_total", ()).values())
            for name in ("handshake_chaos_handshakes", "handshake_chaos_shutdown_errors", "handshake_chaos_signals")
        }

    def write_report(self, summary: dict[str, Any]) -> None:
        if self.options.report_json:
            path = Path(self.options.report_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2) + "\n")


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
