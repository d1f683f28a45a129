"""What the tests share, each defined once (fixtures stay in conftest.py): paths, the Locust command line,
builders of typed results (by keyword, with defaults, so a new field breaks nothing silently), a page's parts."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from chaos.results import (
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
            role="worker",
            signal="TERM",
            pending=12,
            dry_run=False,
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
            role="worker",
            signal="TERM",
            pending=0,
            dry_run=False,
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
