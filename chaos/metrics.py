"""The Prometheus metrics of a run, on an injected registry (tests use a fresh one).

Names and label keys of the first four are fixed by the SPEC. ``release`` and ``ws``
are on every series; label values are bounded (no pids, no connection ids).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from chaos import catalog

PRECREATED_OUTCOMES = (
    "accepted",
    "http_500",
    "http_503",
    "dropped",
    "truncated_response",
    "bad_response",
    "reset",
    "refused",
    "timeout",
    "closed_1012",
    "lost_after_accept",
)
EXIT_KINDS = ("clean", "signalled", "nonzero", "crash", "timeout", "killed", "unknown")
_BOUNDED_OUTCOME = re.compile(r"^(http_[1-5]\d\d|closed_1\d\d\d|os_error_[a-z0-9]{1,24}|[a-z_]{1,32})$")
TARGET_INFO_KEYS = ("uvicorn", "gunicorn", "python", "websockets", "wsproto", "h11", "uvicorn_worker", "worker_class")


def bounded_outcome(outcome: str) -> str:
    return outcome if _BOUNDED_OUTCOME.match(outcome) else "other"


class ChaosMetrics:
    def __init__(self, registry: CollectorRegistry, release: str, ws: str) -> None:
        self.registry = registry
        self.release = release
        self.ws = ws
        base = ["release", "ws"]
        self.shutdown_errors = Counter(
            "handshake_chaos_shutdown_errors",
            "Handshake-time shutdown errors, by side (server log or client wire) and signature.",
            [*base, "side", "signature"],
            registry=registry,
        )
        self.handshakes = Counter(
            "handshake_chaos_handshakes",
            "Handshake attempts by outcome.",
            [*base, "outcome"],
            registry=registry,
        )
        self.signals = Counter(
            "handshake_chaos_signals",
            "Signals sent by the controller.",
            [*base, "signal", "role"],
            registry=registry,
        )
        self.signals_with_pending = Counter(
            "handshake_chaos_signals_landed_with_pending",
            "Signals that landed on a worker holding at least one pending handshake.",
            [*base, "signal", "role"],
            registry=registry,
        )
        self.target_info = Gauge(
            "handshake_chaos_target_info",
            "What is under test (always 1).",
            [*base, *TARGET_INFO_KEYS],
            registry=registry,
        )
        self.pending = Gauge(
            "handshake_chaos_pending_handshakes",
            "Handshakes in flight (request sent, no response yet) right now.",
            base,
            registry=registry,
        )
        self.exposure = Histogram(
            "handshake_chaos_term_exposure_handshakes",
            "Pending handshakes held by a worker at the moment it was signalled.",
            base,
            buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.replacement = Histogram(
            "handshake_chaos_worker_replacement_seconds",
            "From the signal to the replacement worker being ready.",
            base,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
            registry=registry,
        )
        self.worker_exits = Counter(
            "handshake_chaos_worker_exits",
            "Exits of signalled workers, by kind (clean, signalled, nonzero, crash, timeout, killed).",
            [*base, "kind"],
            registry=registry,
        )
        self._precreate()

    def _labels(self) -> dict[str, str]:
        return {"release": self.release, "ws": self.ws}

    def _precreate(self) -> None:
        # A clean run shows zeros rather than no series at all.
        labels = self._labels()
        for entry in catalog.CATALOG:
            self.shutdown_errors.labels(**labels, side="server", signature=entry.signature)
        for signature in catalog.GENERIC_SERVER_SIGNATURES:
            self.shutdown_errors.labels(**labels, side="server", signature=signature)
        for signature in catalog.CLIENT_SIGNATURES:
            self.shutdown_errors.labels(**labels, side="client", signature=signature)
        for outcome in PRECREATED_OUTCOMES:
            self.handshakes.labels(**labels, outcome=outcome)
        self.signals.labels(**labels, signal="TERM", role="worker")
        self.signals_with_pending.labels(**labels, signal="TERM", role="worker")
        for kind in EXIT_KINDS:
            self.worker_exits.labels(**labels, kind=kind)
        self.pending.labels(**labels)
        self.exposure.labels(**labels)
        self.replacement.labels(**labels)

    def set_target(self, versions: Mapping[str, Any], worker_class: str) -> None:
        values = {key: str(versions.get(key) or "none") for key in TARGET_INFO_KEYS if key != "worker_class"}
        self.target_info.labels(**self._labels(), **values, worker_class=worker_class).set(1)

    def count_outcomes(self, outcomes: Mapping[str, int]) -> None:
        for outcome, count in outcomes.items():
            self.handshakes.labels(**self._labels(), outcome=bounded_outcome(outcome)).inc(count)

    def count_errors(self, side: str, errors: Mapping[str, int]) -> None:
        for signature, count in errors.items():
            self.shutdown_errors.labels(**self._labels(), side=side, signature=signature).inc(count)

    def signal_sent(self, signal: str, role: str) -> None:
        self.signals.labels(**self._labels(), signal=signal, role=role).inc()

    def signal_settled(self, signal: str, role: str, pending: int, replacement_seconds: float | None) -> None:
        labels = self._labels()
        self.exposure.labels(**labels).observe(pending)
        if pending > 0:
            self.signals_with_pending.labels(**labels, signal=signal, role=role).inc()
        if replacement_seconds is not None:
            self.replacement.labels(**labels).observe(replacement_seconds)

    def worker_exited(self, kind: str) -> None:
        self.worker_exits.labels(**self._labels(), kind=kind if kind in EXIT_KINDS else "unknown").inc()

    def set_pending(self, count: int) -> None:
        self.pending.labels(**self._labels()).set(count)


def serve(registry: CollectorRegistry, host: str, port: int) -> Any:
    """Serves ``/metrics`` in a background thread; returns the server (``shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def totals(registry: CollectorRegistry, name: str, by: Iterable[str]) -> dict[tuple[str, ...], float]:
    """Sums of a metric's samples grouped by label keys ``by`` (for summaries and tests)."""
    keys = tuple(by)
    grouped: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                group = tuple(sample.labels.get(key, "") for key in keys)
                grouped[group] = grouped.get(group, 0.0) + sample.value
    return grouped
