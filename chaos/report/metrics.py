"""The Prometheus metrics of a run, computed from its live totals at scrape time.

A prometheus_client ``Collector`` on an injected registry: every scrape reads the same
totals and signal records the summary and the gate read, so ``/metrics`` and
``summary.json`` cannot disagree. Every metric is declared once (``METRICS``): the collector builds
its families from the declaration and the docs' metrics table is generated from it. Names and label
keys are fixed by the contract; ``release``, ``ws`` and ``mode`` are on every run series; label
values are bounded (no pids, no connection ids).
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from chaos import catalog
from chaos.results import (
    DEFAULT_SERVER,
    EXIT_KINDS,
    PRECREATED_OUTCOMES,
    ErrorRow,
    SignalRecord,
    bounded_outcome,
    bounded_scenario,
    landed_by_scenario,
)

TARGET_INFO_KEYS = ("uvicorn", "gunicorn", "python", "websockets", "wsproto", "h11", "uvicorn_worker", "worker_class")
EXPOSURE_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
REPLACEMENT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
RUN_LABELS = ("release", "ws", "mode")

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric as the contract names it: the collector builds its family from this, and the
    docs' metrics table is generated from it (``python -m chaos.commands.reference docs/``)."""

    name: str  # the family's name (a counter's samples add ``_total``)
    type: MetricType
    labels: tuple[str, ...]
    meaning: str  # also its HELP text
    buckets: tuple[float, ...] = ()  # a histogram's upper bounds (``+Inf`` added)

    @property
    def exposed_name(self) -> str:
        """The name a query uses: ``_total`` on a counter's samples (a histogram's add ``_bucket`` etc.)."""
        return f"{self.name}_total" if self.type == "counter" else self.name


SHUTDOWN_ERRORS = MetricSpec(
    "handshake_chaos_shutdown_errors",
    "counter",
    (*RUN_LABELS, "scenario", "side", "signature"),
    'Handshake-time shutdown errors, by the handshake state they were found in (scenario; "mixed" when a '
    "server-side error cannot be tied to one), side (server log or client wire) and signature.",
)
REGRESSIONS = MetricSpec(
    "handshake_chaos_regressions",
    "counter",
    (*RUN_LABELS, "signature"),
    "Handshake-time shutdown errors of a catalogued failure this release had already fixed, by signature.",
)
HANDSHAKES = MetricSpec(
    "handshake_chaos_handshakes",
    "counter",
    (*RUN_LABELS, "scenario", "outcome"),
    "Handshake attempts by scenario (the state each was held in) and outcome.",
)
SIGNALS = MetricSpec(
    "handshake_chaos_signals",
    "counter",
    (*RUN_LABELS, "signal", "role"),
    "Signals sent by the controller, by signal and role.",
)
SIGNALS_LANDED = MetricSpec(
    "handshake_chaos_signals_landed_with_pending",
    "counter",
    (*RUN_LABELS, "signal", "role"),
    "Signals that landed on a worker holding at least one pending handshake.",
)
SCENARIO_LANDED = MetricSpec(
    "handshake_chaos_scenario_signals_landed",
    "counter",
    (*RUN_LABELS, "scenario"),
    "Signals that caught at least one pending handshake of the scenario (what a pass needs of every scenario).",
)
# ``server``: the server family (gunicorn-uvicorn, uvicorn-workers, gunicorn-asgi), a bounded label.
TARGET_INFO = MetricSpec(
    "handshake_chaos_target_info",
    "gauge",
    (*RUN_LABELS, "server", *TARGET_INFO_KEYS),
    "What is under test: the server family and the versions it ran with (always 1).",
)
PENDING = MetricSpec(
    "handshake_chaos_pending_handshakes",
    "gauge",
    RUN_LABELS,
    "Handshakes in flight (request sent, no response yet) right now.",
)
CONTROLLER_RUNNING = MetricSpec(
    "handshake_chaos_controller_running",
    "gauge",
    RUN_LABELS,
    "1 while the controller is rolling signals through the workers, else 0.",
)
TERM_EXPOSURE = MetricSpec(
    "handshake_chaos_term_exposure_handshakes",
    "histogram",
    RUN_LABELS,
    "Pending handshakes held by a worker at the moment it was signalled.",
    EXPOSURE_BUCKETS,
)
REPLACEMENT = MetricSpec(
    "handshake_chaos_worker_replacement_seconds",
    "histogram",
    RUN_LABELS,
    "From the signal to the replacement worker being ready.",
    REPLACEMENT_BUCKETS,
)
WORKER_EXITS = MetricSpec(
    "handshake_chaos_worker_exits",
    "counter",
    (*RUN_LABELS, "kind"),
    f"Exits of signalled workers, by kind ({', '.join(EXIT_KINDS)}).",
)
# Every metric, in the order a scrape shows them.
METRICS: tuple[MetricSpec, ...] = (
    SHUTDOWN_ERRORS,
    REGRESSIONS,
    HANDSHAKES,
    SIGNALS,
    SIGNALS_LANDED,
    SCENARIO_LANDED,
    TARGET_INFO,
    PENDING,
    CONTROLLER_RUNNING,
    TERM_EXPOSURE,
    REPLACEMENT,
    WORKER_EXITS,
)


@dataclass(frozen=True)
class MetricsSnapshot:
    """What a scrape shows: the run's labels and its totals right now."""

    release: str
    ws: str
    mode: str
    versions: Mapping[str, Any]
    worker_class: str
    outcomes: Mapping[str, Mapping[str, int]]  # by scenario, then outcome
    errors: Sequence[ErrorRow]
    records: Sequence[SignalRecord]
    pending: int
    controller_running: bool = False
    server: str = DEFAULT_SERVER
    scenarios: Sequence[str] = ("hold-accept",)  # the run's: each gets its zero series


class ChaosCollector(Collector):
    """Yields the run's metric families (``METRICS``, in order) from ``snapshot()`` (None before the run
    has its labels)."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot | None]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot()
        if snapshot is None:
            return
        run = [snapshot.release, snapshot.ws, snapshot.mode]
        yield _errors(run, snapshot.scenarios, snapshot.errors)
        yield _regressions(run, snapshot.ws, snapshot.errors)
        yield _handshakes(run, snapshot.scenarios, snapshot.outcomes)
        sent = [record for record in snapshot.records if not record.dry_run]
        settled = [record for record in sent if record.settled]
        yield _by_signal(SIGNALS, run, sent)
        yield _by_signal(SIGNALS_LANDED, run, [record for record in settled if record.pending > 0])
        landed = _counter(SCENARIO_LANDED)
        by_scenario = Counter({name: 0 for name in snapshot.scenarios}) + Counter(landed_by_scenario(settled))
        for name in sorted({*snapshot.scenarios, *by_scenario}):
            landed.add_metric([*run, name], by_scenario.get(name, 0))
        yield landed
        yield _target_info(snapshot)
        pending = _gauge(PENDING)
        pending.add_metric(run, snapshot.pending)
        yield pending
        running = _gauge(CONTROLLER_RUNNING)
        running.add_metric(run, 1 if snapshot.controller_running else 0)
        yield running
        yield _histogram(TERM_EXPOSURE, run, [record.pending for record in settled])
        yield _histogram(
            REPLACEMENT,
            run,
            [record.replacement_seconds for record in settled if record.replacement_seconds is not None],
        )
        exits = _counter(WORKER_EXITS)
        counted = Counter(record.exit_kind for record in sent if record.exit_kind is not None)
        for kind in EXIT_KINDS:
            exits.add_metric([*run, kind], counted.get(kind, 0))
        yield exits


def _counter(spec: MetricSpec) -> CounterMetricFamily:
    assert spec.type == "counter", spec.name
    return CounterMetricFamily(spec.name, spec.meaning, labels=spec.labels)


def _gauge(spec: MetricSpec) -> GaugeMetricFamily:
    assert spec.type == "gauge", spec.name
    return GaugeMetricFamily(spec.name, spec.meaning, labels=spec.labels)


def _errors(run: list[str], scenarios: Sequence[str], rows: Iterable[ErrorRow]) -> Metric:
    family = _counter(SHUTDOWN_ERRORS)
    counts: Counter[tuple[str, str, str]] = Counter()
    # A clean run shows zeros rather than no series at all: every known signature, in every scenario run.
    server = (*(entry.signature for entry in catalog.ERROR_ENTRIES), *catalog.GENERIC_SERVER_SIGNATURES)
    for scenario in scenarios:
        for signature in server:
            counts[(scenario, "server", signature)] += 0
        for signature in catalog.CLIENT_SIGNATURES:
            counts[(scenario, "client", signature)] += 0
    for row in rows:
        counts[(row.scenario, row.side, row.signature)] += row.count
    for (scenario, side, signature), count in sorted(counts.items()):
        family.add_metric([*run, scenario, side, signature], count)
    return family


def _regressions(run: list[str], ws: str, rows: Iterable[ErrorRow]) -> Metric:
    """Catalogued failures seen in a release at or after the one that fixed them for this ws implementation."""
    family = _counter(REGRESSIONS)
    counts: Counter[str] = Counter()
    # Zeros for every catalogued failure fixed for this ws implementation: "no regression" is a series.
    for entry in catalog.ERROR_ENTRIES:
        if entry.fixed_for(ws) is not None:
            counts[entry.signature] += 0
    for row in rows:
        if row.regression_fixed_in is not None:
            counts[row.signature] += row.count
    for signature, count in sorted(counts.items()):
        family.add_metric([*run, signature], count)
    return family


def _handshakes(run: list[str], scenarios: Sequence[str], outcomes: Mapping[str, Mapping[str, int]]) -> Metric:
    family = _counter(HANDSHAKES)
    counts: Counter[tuple[str, str]] = Counter(
        {(scenario, outcome): 0 for scenario in scenarios for outcome in PRECREATED_OUTCOMES}
    )
    for scenario, by_outcome in outcomes.items():
        for outcome, count in by_outcome.items():
            counts[(bounded_scenario(scenario), bounded_outcome(outcome))] += count
    for (scenario, outcome), count in sorted(counts.items()):
        family.add_metric([*run, scenario, outcome], count)
    return family


def _by_signal(spec: MetricSpec, run: list[str], records: Iterable[SignalRecord]) -> Metric:
    family = _counter(spec)
    counts: Counter[tuple[str, str]] = Counter({("TERM", "worker"): 0})
    for record in records:
        counts[(record.signal, record.role)] += 1
    for (signal, role), count in sorted(counts.items()):
        family.add_metric([*run, signal, role], count)
    return family


def _target_info(snapshot: MetricsSnapshot) -> Metric:
    family = _gauge(TARGET_INFO)
    values = {key: str(snapshot.versions.get(key) or "none") for key in TARGET_INFO_KEYS}
    values.update(
        release=snapshot.release,
        ws=snapshot.ws,
        mode=snapshot.mode,
        server=snapshot.server,
        worker_class=snapshot.worker_class,
    )
    family.add_metric([values[label] for label in TARGET_INFO.labels], 1)
    return family


def _histogram(spec: MetricSpec, run: list[str], values: Sequence[float]) -> Metric:
    assert spec.type == "histogram", spec.name
    family = HistogramMetricFamily(spec.name, spec.meaning, labels=spec.labels)
    buckets = [(_bound(bound), float(sum(1 for value in values if value <= bound))) for bound in spec.buckets]
    buckets.append(("+Inf", float(len(values))))
    family.add_metric(run, buckets, sum_value=float(sum(values)))
    return family


def _bound(bound: float) -> str:
    return f"{float(bound)}"


def serve(registry: CollectorRegistry, host: str, port: int, wrap: Callable[[Any], Any] | None = None) -> Any:
    """Serves ``/metrics`` in a background thread; returns the server (``shutdown()`` stops it).
    ``wrap`` puts the metrics app behind something (the controller's feed and its token)."""
    if wrap is None:
        server, _thread = start_http_server(port, addr=host, registry=registry)
        return server

    class Server(ThreadingWSGIServer):
        # IPv6 or IPv4, as the address given asks (the class attribute is what socketserver reads).
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    httpd = make_server(host, port, wrap(make_wsgi_app(registry)), Server, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="handshake-chaos-http", daemon=True).start()
    return httpd


class _QuietHandler(WSGIRequestHandler):
    """Every scrape and feed page would be a log line otherwise."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def sums(registry: CollectorRegistry, names: Iterable[str]) -> dict[str, float]:
    """The sum of every sample of each named metric, from one collection of the registry."""
    wanted = {name: 0.0 for name in names}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in wanted:
                wanted[sample.name] += sample.value
    return wanted
