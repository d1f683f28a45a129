"""``handshake-chaos matrix``: soaks over several releases and ws implementations, side by side.

Each cell is one soak. Exit 1 if a cell fails its gate unless that failure is expected:
named with ``--expect-fail RELEASE[:WS]``, or, with ``--baseline-release``, showing only
signatures the baseline release's cell of the same ws implementation also showed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.environments import parse_version
from chaos.errors import ChaosError, UsageError
from chaos.launcher import WS_IMPLEMENTATIONS
from chaos.matrixreport import write_all
from chaos.soak import SoakConfig, prepare, run_soak

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatrixConfig:
    releases: tuple[str, ...]
    ws: tuple[str, ...]
    soak: SoakConfig
    report_dir: Path
    expect_fail: tuple[str, ...] = ()
    baseline_release: str | None = None

    def validate(self) -> None:
        if not self.releases or not self.ws:
            raise UsageError("matrix needs at least one --uvicorn and one --ws")
        for ws in self.ws:
            if ws not in WS_IMPLEMENTATIONS:
                raise UsageError(f"--ws: unknown implementation {ws!r} (choose from {', '.join(WS_IMPLEMENTATIONS)})")
        for release in self.releases:
            if release != "latest" and "/" not in release and not release.endswith(".whl"):
                parse_version(release, "--uvicorn")
        for item in self.expect_fail:
            if not item.split(":")[0]:
                raise UsageError(f"--expect-fail takes RELEASE or RELEASE:WS, got {item!r}")
        if self.baseline_release is not None and self.baseline_release not in self.releases:
            raise UsageError(f"--baseline-release {self.baseline_release} is not among --uvicorn")
        dataclasses.replace(self.soak, uvicorn=self.releases[0], ws=self.ws[0]).validate()


def _cell_config(config: MatrixConfig, release: str, ws: str) -> SoakConfig:
    name = Path(release).name if "/" in release else release
    return dataclasses.replace(config.soak, uvicorn=release, ws=ws, report_dir=config.report_dir / f"{name}-{ws}")


def _errors_by_signature(summary: dict[str, Any]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for row in summary.get("errors", []):
        key = f"{row['side']}:{row['signature']}"
        errors[key] = errors.get(key, 0) + int(row["count"])
    return errors


def _cell(release: str, ws: str, summary: dict[str, Any] | None, status: str, reason: str = "") -> dict[str, Any]:
    cell: dict[str, Any] = {"uvicorn": release, "ws": ws, "status": status, "reason": reason}
    if summary is None:
        cell.update(release=release, verdict=status, exit_code=None, errors={}, outcomes={})
        return cell
    signals = summary["signals"]
    pending = signals.get("pending_at_term", [])
    cell.update(
        release=summary["release"],
        versions={k: summary.get("versions", {}).get(k) for k in ("uvicorn", "gunicorn", "websockets", "wsproto")},
        verdict=summary["gate"]["verdict"],
        exit_code=summary["gate"]["exit_code"],
        reason=summary["gate"].get("reason", ""),
        errors=_errors_by_signature(summary),
        signals={"sent": signals["sent"], "landed_with_pending": signals["landed_with_pending"]},
        exposure={
            "mean": round(sum(pending) / len(pending), 1) if pending else 0,
            "max": max(pending) if pending else 0,
        },
        outcomes=summary.get("outcomes", {}),
        wall_seconds=summary.get("soak", {}).get("wall_seconds"),
    )
    return cell


def run_matrix(config: MatrixConfig) -> dict[str, Any]:
    config.validate()
    config.report_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cells: list[dict[str, Any]] = []
    plan = [(release, ws) for release in config.releases for ws in config.ws]
    for index, (release, ws) in enumerate(plan, start=1):
        soak = _cell_config(config, release, ws)
        try:
            prepared = prepare(soak)
        except UsageError as exc:
            # The release does not have this ws implementation: say so and go on.
            cells.append(_cell(release, ws, None, "skipped", str(exc)))
            print(f"[{index}/{len(plan)}] {release} {ws}: skipped ({exc})", flush=True)
            continue
        except ChaosError as exc:
            cells.append(_cell(release, ws, None, "error", str(exc)))
            print(f"[{index}/{len(plan)}] {release} {ws}: error ({exc})", flush=True)
            continue
        print(f"[{index}/{len(plan)}] {prepared.release} {ws}: soaking for {soak.duration:g}s...", flush=True)
        summary = run_soak(soak, quiet=True)
        cell = _cell(release, ws, summary, "ran")
        cells.append(cell)
        errors = sum(cell["errors"].values())
        print(
            f"[{index}/{len(plan)}] {cell['release']} {ws}: {cell['verdict']} ({errors} errors, "
            f"{cell['signals']['landed_with_pending']}/{cell['signals']['sent']} TERMs with pending)",
            flush=True,
        )
    _judge_expectations(cells, config)
    result = {
        "cells": cells,
        "wall_seconds": round(time.monotonic() - started, 1),
        "duration_per_cell_seconds": config.soak.duration,
        "users": config.soak.users,
        "baseline_release": config.baseline_release,
        "expect_fail": list(config.expect_fail),
    }
    result["exit_code"] = matrix_exit_code(cells)
    write_all(result, config.report_dir)
    return result


def _judge_expectations(cells: list[dict[str, Any]], config: MatrixConfig) -> None:
    baseline = {c["ws"]: c for c in cells if config.baseline_release and c["uvicorn"] == config.baseline_release}
    for cell in cells:
        cell["expected_fail"] = any(
            item
            in (cell["uvicorn"], f"{cell['uvicorn']}:{cell['ws']}", cell["release"], f"{cell['release']}:{cell['ws']}")
            for item in config.expect_fail
        )
        cell["new_signatures"] = []
        if config.baseline_release is None or cell["verdict"] != "fail":
            continue
        if cell["uvicorn"] == config.baseline_release:
            cell["expected_fail"] = True  # the baseline only informs
            continue
        known = set(baseline.get(cell["ws"], {}).get("errors", {}))
        cell["new_signatures"] = sorted(set(cell["errors"]) - known)
        if not cell["new_signatures"]:
            cell["expected_fail"] = True


def matrix_exit_code(cells: list[dict[str, Any]]) -> int:
    if any(c["verdict"] == "fail" and not c["expected_fail"] for c in cells):
        return 1
    if any(c["status"] == "error" or c["verdict"] == "error" for c in cells):
        return 4
    if any(c["verdict"] == "inconclusive" for c in cells):
        return 3
    return 0
