"""``handshake-chaos matrix``: soaks over releases x ws implementations x chaos modes, side by side.

Each cell is one soak, prepared once, stopped as soon as its verdict settles (``--until-verdict``,
on by default here). Exit 1 if a cell fails its gate unless that failure is expected: named with
``--expect-fail RELEASE[:WS[:MODE]]``, or, with ``--baseline-release``, showing only signatures
the baseline release's cell of the same ws implementation and mode also showed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chaos.commands.soak import SoakConfig, prepare, run_soak
from chaos.commands.stopping import Interrupted, StopFlag
from chaos.deployment.environments import parse_version
from chaos.deployment.families import OWN_WS_LABELS, family
from chaos.errors import ChaosError, UsageError
from chaos.optionmodel import option
from chaos.report.matrix_tables import write_all
from chaos.results import (
    DEFAULT_MODE,
    DEFAULT_SERVER,
    MODES,
    SERVER_FAMILIES,
    WS_CHOICES,
    ExitCode,
    MatrixCell,
    MatrixResult,
    Mode,
    ServerFamily,
)

log = logging.getLogger(__name__)

_MATRIX = frozenset({"matrix"})


@dataclass(frozen=True)
class MatrixSettings:
    """The matrix's axes and expectations; each cell is a soak of the same settings and options."""

    releases: list[str] = option(
        [],
        "--uvicorn",
        "uvicorn versions ('latest', or a wheel/source dir)",
        required=True,
        scope="process",
        entry_points=_MATRIX,
    )
    ws: list[str] = option(
        ["wsproto", "websockets"],
        "--ws",
        "ws implementations",
        choices=WS_CHOICES,
        what="implementation",
        choices_named="uvicorn's ws implementations are",
        scope="process",
        entry_points=_MATRIX,
    )
    modes: list[Mode] = option(
        [DEFAULT_MODE],
        "--mode",
        "chaos modes, a column each (docs/deploy-shapes.md)",
        choices=MODES,
        what="mode",
        scope="process",
        entry_points=_MATRIX,
    )
    servers: list[ServerFamily] = option(
        [DEFAULT_SERVER],
        "--server",
        "server families, a column each (gunicorn-uvicorn, uvicorn-workers, gunicorn-asgi)",
        choices=SERVER_FAMILIES,
        what="server",
        scope="process",
        entry_points=_MATRIX,
    )
    expect_fail: list[str] = option(
        [],
        "--expect-fail",
        "cells expected to fail: RELEASE, RELEASE:WS or RELEASE:WS:MODE",
        scope="process",
        entry_points=_MATRIX,
    )
    baseline_release: str | None = option(
        None,
        "--baseline-release",
        "fail other releases only on signatures this release's cells did not show",
        scope="process",
        entry_points=_MATRIX,
    )


@dataclass(frozen=True)
class MatrixConfig:
    matrix: MatrixSettings
    soak: SoakConfig  # the template every cell is made from
    report_dir: Path

    def validate(self) -> None:
        matrix = self.matrix
        if not matrix.releases or not matrix.ws:
            raise UsageError("matrix needs at least one --uvicorn and one --ws")
        for release in matrix.releases:
            if release != "latest" and "/" not in release and not release.endswith(".whl"):
                parse_version(release, "--uvicorn")
        cells = [(release, ws, mode) for release, ws, mode, _server in self.plan()]
        for item in matrix.expect_fail:
            release, _, rest = item.partition(":")
            ws, _, mode = rest.partition(":")
            if not release or (ws and ws not in (*WS_CHOICES, *OWN_WS_LABELS)) or (mode and mode not in MODES):
                raise UsageError(f"--expect-fail takes RELEASE, RELEASE:WS or RELEASE:WS:MODE, got {item!r}")
            if not any(
                cell[0] == release and (not ws or cell[1] == ws) and (not mode or cell[2] == mode) for cell in cells
            ):
                raise UsageError(f"--expect-fail {item}: no such cell in this matrix")
        if matrix.baseline_release is not None and matrix.baseline_release not in matrix.releases:
            raise UsageError(f"--baseline-release {matrix.baseline_release} is not among --uvicorn")
        for release, ws, mode, server in self.plan():
            if release == matrix.releases[0] and mode in family(server).modes:
                self.cell(release, ws, mode, server).validate()

    def plan(self) -> list[tuple[str, str, Mode, ServerFamily]]:
        """Every cell: release x server x ws x mode. gunicorn's ASGI worker has one websocket
        implementation of its own, so it gets one cell per release and mode, labelled ws "gunicorn"."""
        matrix = self.matrix
        cells: list[tuple[str, str, Mode, ServerFamily]] = []
        for release in matrix.releases:
            for server in matrix.servers:
                for ws in family(server).ws_choices(matrix.ws):
                    cells += [(release, ws, mode, server) for mode in matrix.modes]
        return cells

    def cell(
        self, release: str, ws: str, mode: Mode = DEFAULT_MODE, server: ServerFamily = DEFAULT_SERVER
    ) -> SoakConfig:
        name = Path(release).name if "/" in release else release
        suffix = "" if mode == DEFAULT_MODE else f"-{mode}"
        suffix += "" if server == DEFAULT_SERVER else f"-{server}"
        options = dataclasses.replace(
            self.soak.options, ws="auto" if ws == family(server).own_ws else ws, mode=mode, server=server
        )
        return SoakConfig(
            settings=dataclasses.replace(self.soak.settings, uvicorn=release),
            options=options,
            report_dir=self.report_dir / f"{name}-{ws}{suffix}",
        )


def run_matrix(config: MatrixConfig, stop: StopFlag | None = None) -> MatrixResult:
    """Runs every cell in turn; a signal stops the cell under way and skips the rest (the tables are written)."""
    stop = stop or StopFlag()
    config.validate()
    config.report_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cells: list[MatrixCell] = []
    plan = config.plan()
    for index, (release, ws, mode, server) in enumerate(plan, start=1):
        soak = config.cell(release, ws, mode, server)
        step = f"[{index}/{len(plan)}] {release} {ws} {mode}" + ("" if server == DEFAULT_SERVER else f" {server}")
        if stop.signum is not None:
            cells.append(MatrixCell.not_run(release, ws, "skipped", "interrupted before this cell", mode, server))
            continue
        if mode not in family(server).modes:
            reason = f"--mode {mode} does not apply to --server {server}"
            cells.append(MatrixCell.not_run(release, ws, "skipped", reason, mode, server))
            print(f"{step}: skipped ({reason})", flush=True)
            continue
        try:
            prepared = prepare(soak)
        except UsageError as exc:
            # The release does not have this ws implementation: say so and go on.
            cells.append(MatrixCell.not_run(release, ws, "skipped", str(exc), mode, server))
            print(f"{step}: skipped ({exc})", flush=True)
            continue
        except ChaosError as exc:
            cells.append(MatrixCell.not_run(release, ws, "error", str(exc), mode, server))
            print(f"{step}: error ({exc})", flush=True)
            continue
        print(f"{step}: soaking for up to {soak.settings.duration:g}s...", flush=True)
        try:
            summary = run_soak(soak, prepared, quiet=True, stop=stop)
        except Interrupted:
            cells.append(MatrixCell.not_run(release, ws, "skipped", "interrupted before this cell", mode, server))
            continue
        cell = MatrixCell.of(release, summary, soak.report_dir)
        cells.append(cell)
        wall = f", {cell.wall_seconds:.0f}s" if cell.wall_seconds is not None else ""
        print(
            f"{step}: {cell.verdict} ({sum(cell.errors.values())} errors, "
            f"{cell.signals.landed_with_pending}/{cell.signals.sent} signals with pending{wall})",
            flush=True,
        )
    judge_expectations(cells, config.matrix.expect_fail, config.matrix.baseline_release)
    result = MatrixResult(
        cells=cells,
        wall_seconds=round(time.monotonic() - started, 1),
        duration_per_cell_seconds=config.soak.settings.duration,
        users=config.soak.settings.users,
        baseline_release=config.matrix.baseline_release,
        expect_fail=list(config.matrix.expect_fail),
        exit_code=matrix_exit_code(cells, stop.signum),
    )
    write_all(result, config.report_dir)
    return result


def judge_expectations(cells: list[MatrixCell], expect_fail: Sequence[str], baseline_release: str | None) -> None:
    baseline = {(c.ws, c.mode, c.server): c for c in cells if baseline_release and c.uvicorn == baseline_release}
    for cell in cells:
        names = tuple(
            name
            for release in (cell.uvicorn, cell.release)
            for name in (release, f"{release}:{cell.ws}", f"{release}:{cell.ws}:{cell.mode}")
        )
        cell.expected_fail = any(item in names for item in expect_fail)
        cell.new_signatures = []
        if baseline_release is None or cell.verdict != "fail":
            continue
        if cell.uvicorn == baseline_release:
            cell.expected_fail = True  # the baseline only informs
            continue
        base = baseline.get((cell.ws, cell.mode, cell.server))
        known = set(base.errors) if base is not None else set()
        cell.new_signatures = sorted(set(cell.errors) - known)
        if not cell.new_signatures:
            cell.expected_fail = True


def matrix_exit_code(cells: list[MatrixCell], interrupted_by: int | None = None) -> int:
    if any(c.verdict == "fail" and not c.expected_fail for c in cells):
        return ExitCode.FAIL
    if interrupted_by is not None:
        return 128 + interrupted_by
    if any(c.status == "error" or c.verdict == "error" for c in cells):
        return ExitCode.NOT_STARTED
    if any(c.verdict == "inconclusive" for c in cells):
        return ExitCode.INCONCLUSIVE
    return ExitCode.PASS
