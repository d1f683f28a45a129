"""What the tests share, each defined once (fixtures stay in conftest.py): paths, the Locust command line,
builders of typed results (by keyword, with defaults, so a new field breaks nothing silently), a page's parts."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from chaos.deployment.launcher import read_versions
from chaos.detect.client import ClientRecorder
from chaos.detect.totals import RunTotals
from chaos.load.client import hold_one
from chaos.results import (
    REFUSED,
    CellSignals,
    ErrorRow,
    Exposure,
    GateResult,
    MatrixCell,
    MatrixResult,
    RunSummary,
    SignalRecord,
    SignalsSummary,
)
from chaos.run.exposure import LocalExposure
from chaos.run.options import ChaosOptions
from chaos.run.session import ChaosSession

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = str(ROOT / "locustfiles" / "handshake.py")
LOCUST = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless"]
SIGNATURE_596 = "uvicorn_596_wsproto_close_during_handshake"


def signal_record(id: int, **fields: Any) -> SignalRecord:  # noqa: A002 -- the record's own field name
    """A worker TERM that caught nothing, unless ``fields`` say otherwise."""
    defaults: dict[str, Any] = {
        "time": float(id),
        "worker_pid": 100 + id,
        "role": "worker",
        "signal": "TERM",
        "pending": 0,
        "dry_run": False,
    }
    return SignalRecord(id=id, **(defaults | fields))


def run_summary() -> RunSummary:
    """A failing soak of 0.19.0 with wsproto: two TERMs, the first caught twelve handshakes pending."""
    records = [
        signal_record(
            1,
            time=0.0,
            worker_pid=4599,
            pending=12,
            worker_exit_seconds=0.2,
            replacement_pid=4601,
            replacement_seconds=0.4,
            exit_kind="crash",
            settled=True,
        ),
        signal_record(
            2,
            time=3.0,
            worker_pid=4601,
            pending=0,
            worker_exit_seconds=0.1,
            replacement_pid=4610,
            replacement_seconds=0.3,
            exit_kind="signalled",
            settled=True,
        ),
    ]
    return RunSummary(
        release="0.19.0",
        ws="wsproto",
        mode="worker-term",
        versions={"uvicorn": "0.19.0", "gunicorn": "20.1.0", "python": "3.11.7"},
        gate=GateResult("fail", 1, f"9 handshake-time shutdown errors: {SIGNATURE_596}", [SIGNATURE_596]),
        errors=[ErrorRow("server", SIGNATURE_596, 9, "LocalProtocolError: Event | CloseConnection", "uvicorn #596")],
        signals=SignalsSummary.of(records),
        outcomes={"accepted": 40, "http_500": 9},
        worker_exits={"crash": 1, "signalled": 1},
    )


def matrix_result() -> MatrixResult:
    """A matrix of one cell that ran (an expected fail) and one skipped."""
    ran = MatrixCell(
        uvicorn="0.19.0",
        ws="wsproto",
        status="ran",
        reason="",
        release="0.19.0",
        verdict="fail",
        exit_code=1,
        errors={f"server:{SIGNATURE_596}": 9, "client:handshake_dropped": 2},
        signals=CellSignals(sent=3, landed_with_pending=2),
        exposure=Exposure.of([12, 0, 6]),
        outcomes={"accepted": 40},
        expected_fail=True,
    )
    skipped = MatrixCell.not_run("0.19.0", "websockets-sansio", "skipped", "0.19.0 has no websockets-sansio")
    return MatrixResult([ran, skipped], 61.0, 30.0, 100, None, ["0.19.0:wsproto"], 0)


def page_template_args(page: str) -> dict[str, Any]:
    """What the page's React app builds the start form from."""
    match = re.search(r"window\.templateArgs = (\{.*?\})\s*</script>", page, re.DOTALL)
    assert match, "no templateArgs in the page"
    args: dict[str, Any] = json.loads(match.group(1))
    return args


# The processes, ports and pages of what the tests start.


def installed_ws_implementations() -> list[str]:
    return [name for name in read_versions(sys.executable)["ws_implementations"] if name != "auto"] + ["auto"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is truthy; fail with ``what`` past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """No socket listens there: a server could bind it now (TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def assert_gone(pids: list[int]) -> None:
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes still running: {alive}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def read_summary(path: Path) -> dict[str, Any]:
    """A written summary.json, validated against the schema in docs/ (the contract CI jobs parse)."""
    import jsonschema

    summary: dict[str, Any] = json.loads(Path(path).read_text())
    schema = json.loads((ROOT / "docs" / "summary.schema.json").read_text())
    jsonschema.validate(summary, schema)
    return summary


def metric_sum(metrics_url: str, name: str) -> float:
    """The sum of a metric's samples on a live /metrics (-1 while nothing answers there)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = scrape(metrics_url)
    except OSError:
        return -1.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def locust_requests(stats_csv: Path) -> int:
    """Locust's Aggregated request count in its --csv stats file (0 until it has written one)."""
    import csv

    try:
        with Path(stats_csv).open() as handle:
            rows = {row["Name"]: row for row in csv.DictReader(handle)}
    except (OSError, KeyError):
        return 0
    return int(rows.get("Aggregated", {}).get("Request Count") or 0)


CLI = [sys.executable, "-m", "chaos"]
# A soak that signals often and holds briefly: verdicts in seconds.
FAST = ["--hold-seconds", "1", "--term-interval", "1", "--term-jitter", "0.5", "--metrics-port", "0"]


def run_cli(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``handshake-chaos ARGS`` as a user runs it, from ``cwd``."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def signatures(summary: dict[str, Any]) -> dict[str, int]:
    """A summary's error count per signature, every scenario and side together."""
    counts: dict[str, int] = {}
    for row in summary["errors"]:
        counts[row["signature"]] = counts.get(row["signature"], 0) + row["count"]
    return counts


def local_session(options: ChaosOptions, host: str | None = None) -> ChaosSession:
    """A session whose users run in this process (as a local Locust runner's do)."""
    totals = RunTotals()
    recorder = ClientRecorder(options.wire_judgement(), sink=totals.add_client)
    return ChaosSession(options, host, exposure=LocalExposure(recorder), totals=totals)


def drive_load(session: ChaosSession, users: int, seconds: float) -> None:
    """Real handshakes against a started local session from ``users`` threads, for ``seconds``."""
    deadline = time.monotonic() + seconds
    profile = session.load_profile()  # the scenarios the session planned
    exposure, host = session.exposure, session.host
    assert isinstance(exposure, LocalExposure) and host is not None, "a started local session"

    def user(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(10_000):  # bounded in count as well as in time
            if time.monotonic() >= deadline:
                return
            result = hold_one(host, profile, rng, exposure.ledger)
            exposure.recorder.finished(result)
            if result.outcome == REFUSED:
                time.sleep(0.2)

    threads = [threading.Thread(target=user, args=(seed,)) for seed in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


JUNIT_XSD = ROOT / "tests" / "data" / "junit-10.xsd"


def read_junit(path: Path) -> Any:
    """A ``--junit-xml`` file as CI reads it: valid against the JUnit XSD Jenkins validates with, then parsed
    by a JUnit consumer (junitparser). Returns the one test suite it holds."""
    from junitparser import JUnitXml
    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(JUNIT_XSD)))
    document = etree.parse(str(path))
    assert schema.validate(document), schema.error_log
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 1, suites
    return suites[0]


def junit_cases(suite: Any) -> dict[str, tuple[str | None, str, str]]:
    """Each test case by name: (outcome element or None when it passed, its message, its text)."""
    cases = {}
    for case in suite:
        outcome = case.result[0] if case.result else None
        kind = None if outcome is None else outcome._tag
        cases[case.name] = (
            kind,
            (outcome.message or "") if outcome is not None else "",
            (outcome.text or "") if outcome is not None else (case.system_out or ""),
        )
    return cases
