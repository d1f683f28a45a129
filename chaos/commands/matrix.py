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
    MIX,
    MODES,
    SCENARIOS,
    SERVER_FAMILIES,
    WS_CHOICES,
    CellStatus,
    ExitCode,
    MatrixCell,
    MatrixResult,
    Mode,
    Scenario,
    ServerFamily,
)
from chaos.scenarios import scenario

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
        group="deployment",
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
        group="deployment",
    )
    modes: list[Mode] = option(
        [DEFAULT_MODE],
        "--mode",
        "chaos modes, a column each (docs/deploy-shapes.md)",
        choices=MODES,
        what="mode",
        scope="process",
        entry_points=_MATRIX,
        group="signals",
    )
    servers: list[ServerFamily] = option(
        [DEFAULT_SERVER],
        "--server",
        "server families, a column each (gunicorn-uvicorn, uvicorn-workers, gunicorn-asgi)",
        choices=SERVER_FAMILIES,
        what="server",
        scope="process",
        entry_points=_MATRIX,
        group="deployment",
    )
    scenarios: list[Scenario] = option(
        [],
        "--scenario",
        "scenarios, a column each (default: one cell per release running every scenario that applies, mixed)",
        choices=SCENARIOS,
        what="scenario",
        scope="process",
        entry_points=_MATRIX,
        group="load",
    )
    expect_fail: list[str] = option(
        [],
        "--expect-fail",
        "cells expected to fail: RELEASE, RELEASE:WS or RELEASE:WS:MODE",
        scope="process",
        entry_points=_MATRIX,
        group="gate",
    )
    baseline_release: str | None = option(
        None,
        "--baseline-release",
        "fail other releases only on signatures this release's cells did not show",
        scope="process",
        entry_points=_MATRIX,
        group="gate",
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
        cells = [(cell.release, cell.ws, cell.mode) for cell in self.plan()]
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
        for cell in self.plan():
            if cell.release == matrix.releases[0] and cell.mode in family(cell.server).modes:
                self.cell(cell).validate()

    def plan(self) -> list[PlannedCell]:
        """Every cell: release x server x ws x mode x scenario. gunicorn's ASGI worker has one websocket
        implementation of its own, so it gets one cell per release and mode, labelled ws "gunicorn"."""
        matrix = self.matrix
        return [
            PlannedCell(release, ws, mode, server, scenario)
            for release in matrix.releases
            for server in matrix.servers
            for ws in family(server).ws_choices(matrix.ws)
            for mode in matrix.modes
            for scenario in _scenario_axis(matrix.scenarios)
        ]

    def cell(self, planned: PlannedCell) -> SoakConfig:
        name = Path(planned.release).name if "/" in planned.release else planned.release
        suffix = "" if planned.mode == DEFAULT_MODE else f"-{planned.mode}"
        suffix += "" if planned.server == DEFAULT_SERVER else f"-{planned.server}"
        suffix += "" if planned.scenario == MIX else f"-{planned.scenario}"
        options = dataclasses.replace(
            self.soak.options,
            ws="auto" if planned.ws == family(planned.server).own_ws else planned.ws,
            mode=planned.mode,
            server=planned.server,
            scenarios=[] if planned.scenario == MIX else [scenario(planned.scenario).name],
        )
        return SoakConfig(
            settings=dataclasses.replace(self.soak.settings, uvicorn=planned.release),
            options=options,
            report_dir=self.report_dir / f"{name}-{planned.ws}{suffix}",
        )


def _scenario_axis(asked: list[Scenario]) -> list[str]:
    """One cell per scenario asked for, or one cell that mixes every scenario that applies."""
    return list(asked) if asked else [MIX]


@dataclass(frozen=True)
class PlannedCell:
    """One cell of a matrix before it runs: what it soaks."""

    release: str
    ws: str
    mode: Mode = DEFAULT_MODE
    server: ServerFamily = DEFAULT_SERVER
    scenario: str = MIX  # one scenario alone, or every one that applies, mixed

    def not_run(self, status: CellStatus, reason: str) -> MatrixCell:
        return MatrixCell.not_run(self.release, self.ws, status, reason, self.mode, self.server, self.scenario)

    @property
    def step(self) -> str:
        extras: list[str] = [self.server] if self.server != DEFAULT_SERVER else []
        extras += [self.scenario] if self.scenario != MIX else []
        return " ".join([self.release, self.ws, self.mode, *extras])


def run_matrix(config: MatrixConfig, stop: StopFlag | None = None) -> MatrixResult:
    """Runs every cell in turn; a signal stops the cell under way and skips the rest (the tables are written)."""
    stop = stop or StopFlag()
    config.validate()
    config.report_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cells: list[MatrixCell] = []
    plan = config.plan()
    for index, planned in enumerate(plan, start=1):
        soak = config.cell(planned)
        step = f"[{index}/{len(plan)}] {planned.step}"
        if stop.signum is not None:
            cells.append(planned.not_run("skipped", "interrupted before this cell"))
            continue
        if planned.mode not in family(planned.server).modes:
            reason = f"--mode {planned.mode} does not apply to --server {planned.server}"
            cells.append(planned.not_run("skipped", reason))
            print(f"{step}: skipped ({reason})", flush=True)
            continue
        try:
            prepared = prepare(soak)
        except UsageError as exc:
            # The release does not have this ws implementation, or this scenario cannot happen there.
            cells.append(planned.not_run("skipped", str(exc)))
            print(f"{step}: skipped ({exc})", flush=True)
            continue
        except ChaosError as exc:
            cells.append(planned.not_run("error", str(exc)))
            print(f"{step}: error ({exc})", flush=True)
            continue
        print(f"{step}: soaking for up to {soak.settings.duration:g}s...", flush=True)
        try:
            summary = run_soak(soak, prepared, quiet=True, stop=stop)
        except Interrupted:
            cells.append(planned.not_run("skipped", "interrupted before this cell"))
            continue
        cell = MatrixCell.of(planned.release, summary, soak.report_dir, planned.scenario)
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
    baseline = {
        (c.ws, c.mode, c.server, c.scenario): c for c in cells if baseline_release and c.uvicorn == baseline_release
    }
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
        base = baseline.get((cell.ws, cell.mode, cell.server, cell.scenario))
        known = set(base.errors) if base is not None else set()
        cell.new_signatures = sorted(set(cell.errors) - known)
        if not cell.new_signatures:
            cell.expected_fail = True


def matrix_exit_code(cells: list[MatrixCell], interrupted_by: int | None = None) -> int:
    if any(c.verdict == "fail" and not c.expected_fail for c in cells):
        return ExitCode.FAIL
    if interrupted_by is not None:
        return ExitCode.of_signal(interrupted_by)
    if any(c.status == "error" or c.verdict == "error" for c in cells):
        return ExitCode.NOT_STARTED
    if any(c.verdict == "inconclusive" for c in cells):
        return ExitCode.INCONCLUSIVE
    return ExitCode.PASS
