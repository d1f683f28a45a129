"""/metrics of a real run: every SPEC metric, labelled, valid for promtool."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from chaos.report.metrics import METRICS, ChaosCollector, MetricsSnapshot
from chaos.results import ErrorRow, bounded_outcome
from tests.helpers import ROOT, free_port, scrape, signal_record, wait_until

SPEC_METRICS = {
    "handshake_chaos_shutdown_errors": {"release", "ws", "mode", "scenario", "side", "signature"},
    "handshake_chaos_handshakes": {"release", "ws", "mode", "scenario", "outcome"},
    "handshake_chaos_signals": {"release", "ws", "mode", "signal", "role"},
    "handshake_chaos_target_info": {"release", "ws", "uvicorn", "gunicorn", "python"},
}


def _families(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    return float(
        sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
    )


def _snapshot(**changes: Any) -> MetricsSnapshot:
    fields = {
        "release": "0.20.0",
        "ws": "wsproto",
        "mode": "worker-term",
        "versions": {"uvicorn": "0.20.0", "gunicorn": "20.1.0"},
        "worker_class": "uvicorn.workers",
        "outcomes": {},
        "errors": [],
        "records": [],
        "pending": 0,
    }
    return MetricsSnapshot(**{**fields, **changes})


def test_a_clean_registry_shows_zeros_not_nothing():
    registry = CollectorRegistry()
    registry.register(ChaosCollector(_snapshot))
    labels = {"release": "0.20.0", "ws": "wsproto", "mode": "worker-term", "scenario": "hold-accept"}
    value = registry.get_sample_value(
        "handshake_chaos_shutdown_errors_total",
        {**labels, "side": "server", "signature": "uvicorn_596_wsproto_close_during_handshake"},
    )
    assert value == 0.0
    assert registry.get_sample_value("handshake_chaos_handshakes_total", {**labels, "outcome": "accepted"}) == 0.0
    run = {"release": "0.20.0", "ws": "wsproto", "mode": "worker-term"}
    assert (
        registry.get_sample_value("handshake_chaos_scenario_signals_landed_total", {**run, "scenario": "hold-accept"})
        == 0
    )


def test_every_scenario_of_the_run_has_its_series_and_mixed_errors_say_so():
    registry = CollectorRegistry()
    errors = [
        ErrorRow("server", "worker_crash_during_shutdown", 2, "...", scenario="mixed"),
        ErrorRow("client", "handshake_dropped", 3, "...", scenario="deny-stream"),
    ]
    records = [signal_record(1, pending=4, settled=True, pending_by_scenario={"deny-stream": 3, "hold-accept": 1})]
    snapshot = _snapshot(
        scenarios=("hold-accept", "deny-stream"),
        outcomes={"deny-stream": {"dropped": 3, "http_403": 5}, "hold-accept": {"http_500": 1}},
        errors=errors,
        records=records,
    )
    registry.register(ChaosCollector(lambda: snapshot))
    run = {"release": "0.20.0", "ws": "wsproto", "mode": "worker-term"}

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**run, **labels})

    assert value("handshake_chaos_handshakes_total", scenario="deny-stream", outcome="http_403") == 5
    assert value("handshake_chaos_handshakes_total", scenario="deny-stream", outcome="accepted") == 0
    errors_total = "handshake_chaos_shutdown_errors_total"
    assert value(errors_total, scenario="mixed", side="server", signature="worker_crash_during_shutdown") == 2
    assert value(errors_total, scenario="deny-stream", side="client", signature="handshake_dropped") == 3
    assert value(errors_total, scenario="hold-accept", side="client", signature="handshake_dropped") == 0
    landed = "handshake_chaos_scenario_signals_landed_total"
    assert value(landed, scenario="deny-stream") == 1 and value(landed, scenario="hold-accept") == 1


def test_the_collector_yields_exactly_the_declared_metrics():
    # The docs' metrics table is generated from METRICS: what a scrape shows must be that table.
    registry = CollectorRegistry()
    registry.register(ChaosCollector(_snapshot))
    families = list(registry.collect())
    assert [family.name for family in families] == [spec.name for spec in METRICS]
    for family, spec in zip(families, METRICS, strict=True):
        assert family.type == spec.type and family.documentation == spec.meaning, spec.name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(spec.labels), (spec.name, sample.labels)
            assert sample.name.startswith(spec.exposed_name), (spec.name, sample.name)
        if spec.type == "histogram":
            bounds = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
            assert bounds == [*(str(float(b)) for b in spec.buckets), "+Inf"], spec.name


def test_regressions_are_counted_by_signature_with_zeros_for_every_fixed_failure():
    regressed = ErrorRow("server", "uvicorn_596_wsproto_close_during_handshake", 7, "...", None, "0.20.0")
    unfixed = ErrorRow("server", "uvicorn_811_wsproto_rejection_in_wrong_state", 2, "...")
    registry = CollectorRegistry()
    registry.register(ChaosCollector(lambda: _snapshot(errors=[regressed, unfixed])))
    labels = {"release": "0.20.0", "ws": "wsproto", "mode": "worker-term"}

    def regressions(signature: str) -> float | None:
        return registry.get_sample_value("handshake_chaos_regressions_total", {**labels, "signature": signature})

    assert regressions("uvicorn_596_wsproto_close_during_handshake") == 7.0
    assert regressions("uvicorn_accept_after_shutdown_rejection") == 0.0  # fixed for wsproto: a zero series
    assert regressions("uvicorn_811_wsproto_rejection_in_wrong_state") is None  # never fixed: never a regression
    assert regressions("uvicorn_1344_websockets_handshake_closed_on_shutdown") is None  # another implementation's


def test_scrapes_compute_from_the_live_totals():
    records = [
        signal_record(
            1,
            time=0.0,
            worker_pid=101,
            role="worker",
            signal="TERM",
            pending=7,
            dry_run=False,
            replacement_seconds=0.4,
            exit_kind="crash",
            settled=True,
        ),
        signal_record(2, time=1.0, worker_pid=102, pending=0),  # not settled yet: no exposure observation
        signal_record(3, time=2.0, worker_pid=103, pending=5, dry_run=True),  # dry run: never counted as sent
    ]
    live = {"outcomes": {"hold-accept": {"accepted": 3, "x" * 40: 1}}, "records": records[:1]}
    registry = CollectorRegistry()
    registry.register(ChaosCollector(lambda: _snapshot(**live)))
    labels = {"release": "0.20.0", "ws": "wsproto", "mode": "worker-term"}
    scenario = {**labels, "scenario": "hold-accept"}
    assert (
        registry.get_sample_value("handshake_chaos_signals_total", {**labels, "signal": "TERM", "role": "worker"}) == 1
    )
    live["records"] = records
    live["errors"] = [ErrorRow("server", "uvicorn_596_wsproto_close_during_handshake", 4, "line")]
    assert (
        registry.get_sample_value("handshake_chaos_signals_total", {**labels, "signal": "TERM", "role": "worker"}) == 2
    )
    landed = {**labels, "signal": "TERM", "role": "worker"}
    assert registry.get_sample_value("handshake_chaos_signals_landed_with_pending_total", landed) == 1
    assert registry.get_sample_value("handshake_chaos_term_exposure_handshakes_count", labels) == 1
    assert registry.get_sample_value("handshake_chaos_term_exposure_handshakes_sum", labels) == 7
    assert registry.get_sample_value("handshake_chaos_term_exposure_handshakes_bucket", {**labels, "le": "5.0"}) == 0
    assert registry.get_sample_value("handshake_chaos_term_exposure_handshakes_bucket", {**labels, "le": "10.0"}) == 1
    assert registry.get_sample_value("handshake_chaos_worker_exits_total", {**labels, "kind": "crash"}) == 1
    assert registry.get_sample_value("handshake_chaos_handshakes_total", {**scenario, "outcome": "other"}) == 1
    assert (
        registry.get_sample_value(
            "handshake_chaos_shutdown_errors_total",
            {**scenario, "side": "server", "signature": "uvicorn_596_wsproto_close_during_handshake"},
        )
        == 4
    )


def test_nothing_is_exposed_before_the_run_has_its_labels():
    registry = CollectorRegistry()
    registry.register(ChaosCollector(lambda: None))
    assert not [family for family in registry.collect() if family.name.startswith("handshake_chaos")]


def test_outcome_labels_stay_bounded():
    assert bounded_outcome("http_503") == "http_503"
    assert bounded_outcome("closed_1012") == "closed_1012"
    assert bounded_outcome("closed_4321") == "other"
    assert bounded_outcome("x" * 200) == "other"


def test_metrics_of_a_real_run_are_complete_and_pass_promtool(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "handshake.py"), "--headless"]
    command += ["-u", "40", "-r", "40", "-t", "20s", "--hold-seconds", "1", "--keep-open-seconds", "0.5"]
    command += ["--term-interval", "1", "--term-jitter", "0.5", "--metrics-port", str(port), "--release", "rc-test"]
    locust = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    texts: list[str] = []

    def scraped_a_signal_and_handshakes() -> bool:
        try:
            text = scrape(url)
        except OSError:
            return False
        samples = [s for family in _families(text).values() for s in family]
        texts.append(text)
        return (
            _value(samples, "handshake_chaos_signals_total") >= 1
            and _value(samples, "handshake_chaos_handshakes_total") >= 1
        )

    try:
        wait_until(scraped_a_signal_and_handshakes, 60, "a scrape with signals and handshakes")
    finally:
        locust.terminate()
        _, stderr = locust.communicate(timeout=90)
    text = texts[-1]
    families = _families(text)
    for name, labels in SPEC_METRICS.items():
        assert name in families, f"{name} missing from /metrics"
        for sample in families[name]:
            if sample.name.endswith(("_created",)):
                continue
            assert labels <= set(sample.labels), (sample.name, sample.labels)
            assert sample.labels["release"] == "rc-test" and sample.labels["ws"] == "auto"
    info = [s for s in families["handshake_chaos_target_info"] if s.value == 1]
    assert len(info) == 1 and info[0].labels["uvicorn"] and info[0].labels["gunicorn"]
    for extra in ("handshake_chaos_pending_handshakes", "handshake_chaos_term_exposure_handshakes"):
        assert extra in families
    # No pids or connection ids in any label value.
    for samples in families.values():
        for sample in samples:
            assert not any(value.isdigit() and len(value) > 3 for value in sample.labels.values()), sample

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/test installs Debian's prometheus package"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr
    assert "Traceback" not in stderr
