"""``handshake-chaos health``: the release health table, ``docs/health.md`` and its JSON.

One soak per cell: the newest patch of every uvicorn minor release from ``--since`` on (or the
releases named), x ws implementation, under ``worker-term`` with every scenario that applies mixed,
each stopped once its verdict settles (``--until-verdict``). Resumable: every cell is kept in the
JSON file (``--state``) with the tool version and the release environment it was measured with, and
a cell already measured with the same tool version, environment and soak settings is not run again,
so the table can be filled over several sittings (``--limit N`` measures at most N new cells). The
page is written after every cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from chaos import __version__
from chaos.commands.matrix import MatrixConfig, MatrixSettings, PlannedCell
from chaos.commands.soak import SoakConfig, SoakSettings, prepare, run_soak
from chaos.commands.stopping import Interrupted, StopFlag
from chaos.deployment.environments import parse_version, published_versions
from chaos.errors import ChaosError, UsageError
from chaos.history import (
    Boundary,
    FixCheck,
    Measured,
    catalogue_boundaries,
    cell_key,
    check_catalogue,
    measured_boundaries,
)
from chaos.optionmodel import add_command, build, changed_args, option
from chaos.results import (
    DEFAULT_MODE,
    DEFAULT_SERVER,
    MIX,
    WS_IMPLEMENTATIONS,
    ExitCode,
    JsonRecord,
    MatrixCell,
)
from chaos.run.options import ChaosOptions

_HEALTH = frozenset({"health"})
_SHARED = "matrix"
CATALOGUE_LINK = "contract.md#the-catalogue-of-known-failures"
CATALOGUE_CELL_SECONDS = 30.0


@dataclass(frozen=True)
class HealthSettings:
    releases: list[str] = option(
        [],
        "--uvicorn",
        "releases to measure (none: the newest patch of every minor release from --since on)",
        entry_points=_HEALTH,
        group="deployment",
    )
    since: str = option(
        "0.19", "--since", "the oldest minor release of the table", entry_points=_HEALTH, group="deployment"
    )
    ws: list[str] = option(
        list(WS_IMPLEMENTATIONS),
        "--ws",
        "ws implementations, a column each",
        choices=WS_IMPLEMENTATIONS,
        what="implementation",
        choices_named="uvicorn's ws implementations are",
        entry_points=_HEALTH,
        group="deployment",
    )
    state: str = option(
        "docs/health.json",
        "--state",
        "the table as JSON: cells measured with the same tool version, environment and settings are kept",
        entry_points=_HEALTH,
        group="output",
    )
    output: str = option("docs/health.md", "--output", "the Markdown page", entry_points=_HEALTH, group="output")
    boundaries: bool = option(
        True,
        "--boundaries",
        "then measure either side of every boundary: each scenario singly and every other mode, for the "
        "releases the catalogue says brought or fixed a failure and those the grid found a change between",
        entry_points=_HEALTH,
        group="deployment",
    )
    limit: int | None = option(
        None,
        "--limit",
        "measure at most this many new cells in this sitting",
        minimum=0,
        entry_points=_HEALTH,
        group="gate",
    )


OPTION_CLASSES: tuple[tuple[type, str], ...] = (
    (HealthSettings, "health"),
    (SoakSettings, _SHARED),
    (ChaosOptions, _SHARED),
)


@dataclass
class HealthCell(JsonRecord):
    """One cell as measured: the matrix cell, and what it was measured with (what makes it reusable)."""

    key: str  # release:ws:mode:scenario
    cell: MatrixCell
    tool_version: str
    environment: str | None  # the release environment's directory name (its full specification's hash)
    settings: str  # a fingerprint of the soak settings
    measured_at: str  # UTC, when it ran
    # Every signature any soak of this cell found in this environment, with its counts added up: that a
    # failure happened is proof once seen, that it did not is only as good as the soaks that looked.
    evidence: dict[str, int] = field(default_factory=dict)
    soaks: int = 1  # how many soaks the evidence comes from


@dataclass
class HealthTable(JsonRecord):
    """``docs/health.json``."""

    cells: dict[str, HealthCell] = field(default_factory=dict)
    releases: list[str] = field(default_factory=list)
    ws: list[str] = field(default_factory=list)
    duration_cap_seconds: float = 0.0
    users: int = 0
    last_sitting_wall_seconds: float = 0.0
    last_sitting_measured: int = 0
    sittings_wall_seconds: float = 0.0  # every sitting's wall time together: what the table has cost so far
    boundaries: list[dict[str, Any]] = field(default_factory=list)  # as the last sitting planned them
    # The index's releases at the last sitting: the history check reads "the release before" from it.
    published: list[str] = field(default_factory=list)


def newest_patches(published: list[str], since: str) -> list[str]:
    """The newest stable release of every minor series from ``since`` on, oldest first."""
    floor = Version(since)
    newest: dict[tuple[int, int], Version] = {}
    for text in published:
        version = Version(text)
        if version.is_prerelease or version < floor:
            continue
        series = (version.major, version.minor)
        if series not in newest or version > newest[series]:
            newest[series] = version
    by_version = {Version(text): text for text in published}
    return [by_version[version] for version in sorted(newest.values())]


def _fingerprint(template: SoakConfig) -> str:
    """The soak settings a cell's verdict depends on (never where its report or metrics go)."""
    settings = template.settings
    options = changed_args(template.options, _SHARED)
    for flag in ("--metrics-port", "--metrics-host"):
        if flag in options:
            index = options.index(flag)
            del options[index : index + 2]
    text = json.dumps([settings.duration, settings.users, settings.spawn_rate, settings.as_of, options])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _environment(python: str) -> str:
    return Path(python).parent.parent.name  # ENV/bin/python (not resolved: it links to the base interpreter)


def add_parser(subparsers: Any) -> None:
    add_command(
        subparsers,
        "health",
        "the release health table: every minor release x ws implementation, resumable",
        OPTION_CLASSES,
    )


def run_health_command(values: dict[str, Any]) -> int:
    settings = build(HealthSettings, values, "health")
    soak_settings = build(SoakSettings, values, _SHARED)
    options = build(ChaosOptions, values, _SHARED)
    report_dir = Path(soak_settings.report_dir or "reports/health")
    return run_health(settings, SoakConfig(soak_settings, options, report_dir), StopFlag().install())


def run_health(settings: HealthSettings, template: SoakConfig, stop: StopFlag) -> int:
    started = time.monotonic()
    for release in settings.releases:
        parse_version(release, "--uvicorn")
    parse_version(settings.since, "--since")
    state_path, output = Path(settings.state), Path(settings.output)
    published = list(published_versions("uvicorn"))
    releases = list(settings.releases) or newest_patches(published, settings.since)
    matrix = MatrixConfig(MatrixSettings(releases=releases, ws=list(settings.ws)), template, template.report_dir)
    template.options.validate(host=None)
    table = HealthTable.read(state_path) if state_path.is_file() else HealthTable()
    table.releases, table.ws, table.published = releases, list(settings.ws), published
    table.duration_cap_seconds, table.users = template.settings.duration, template.settings.users
    grid = matrix.plan()
    sitting = _Sitting(settings, table, state_path, output, stop)
    sitting.measure(grid, "grid", matrix, _fingerprint(template))
    boundaries: list[Boundary] = []
    if settings.boundaries and stop.signum is None:
        catalogued = catalogue_boundaries_within(table, published, list(settings.ws))
        # A catalogue claim is checked in cells that run their whole time: a verdict settled early on another
        # failure would hide the one the check follows (0.23.2's deny-close raises two, one ten times as often).
        whole = whole_time(template)
        first = boundary_plan(catalogued, grid)
        sitting.measure(first, "catalogue", MatrixConfig(matrix.matrix, whole, whole.report_dir), _fingerprint(whole))
        # Planned from what the grid holds now: a change found in this sitting is measured in it too.
        measured = measured_boundaries(measured_cells(table), table.releases, list(settings.ws))
        sitting.measure(boundary_plan(measured, grid + first), "boundaries", matrix, _fingerprint(template))
        boundaries = catalogued + measured
    table.last_sitting_wall_seconds = round(time.monotonic() - started, 1)
    table.last_sitting_measured = sitting.measured
    table.sittings_wall_seconds = round(table.sittings_wall_seconds + table.last_sitting_wall_seconds, 1)
    table.boundaries = [dataclasses.asdict(boundary) for boundary in boundaries] or table.boundaries
    sitting.save()
    for check in catalogue_checks(table):
        print(f"catalogue {check.line()}")
    print(
        f"health: {sitting.measured} cells measured in {table.last_sitting_wall_seconds:.0f}s; {output}, {state_path}"
    )
    return ExitCode.PASS if stop.signum is None else ExitCode.of_signal(stop.signum)


class _Sitting:
    """One sitting's measuring: a cell already measured alike is kept, every new one is saved at once."""

    def __init__(
        self, settings: HealthSettings, table: HealthTable, state_path: Path, output: Path, stop: StopFlag
    ) -> None:
        self.settings, self.table = settings, table
        self.state_path, self.output, self.stop = state_path, output, stop
        self.measured = 0
        self.planned: list[PlannedCell] = []

    def save(self) -> None:
        _save(self.table, self.state_path, self.output, self.planned)

    def measure(self, plan: list[PlannedCell], phase: str, matrix: MatrixConfig, fingerprint: str) -> None:
        self.planned += plan
        for number, planned in enumerate(plan, start=1):
            if self.stop.signum is not None:
                return
            self._measure(planned, f"[{phase} {number}/{len(plan)}] {planned.step}", matrix, fingerprint)

    def _measure(self, planned: PlannedCell, step: str, matrix: MatrixConfig, fingerprint: str) -> None:
        settings, table = self.settings, self.table
        key = cell_key(planned.release, planned.ws, planned.mode, planned.scenario)
        soak = matrix.cell(planned)
        if settings.limit is not None and self.measured >= settings.limit:
            # Nothing more is built or run in this sitting: what the table holds stays as it is.
            held = table.cells.get(key)
            print(f"{step}: {held.cell.verdict + ' (kept)' if held else 'not measured'} (--limit {settings.limit})")
            return
        try:
            prepared = prepare(soak)
        except UsageError as exc:
            table.cells[key] = _kept(key, planned.not_run("skipped", str(exc)), None, fingerprint)
            print(f"{step}: skipped ({exc})", flush=True)
            return
        except ChaosError as exc:
            table.cells[key] = _kept(key, planned.not_run("error", str(exc)), None, fingerprint)
            print(f"{step}: error ({exc})", flush=True)
            return
        environment = _environment(prepared.python)
        known = table.cells.get(key)
        if known is not None and (known.tool_version, known.environment, known.settings) == (
            __version__,
            environment,
            fingerprint,
        ):
            print(f"{step}: {known.cell.verdict} (measured {known.measured_at}, kept)", flush=True)
            return
        print(f"{step}: soaking for up to {soak.settings.duration:g}s...", flush=True)
        try:
            summary = run_soak(soak, prepared, quiet=True, stop=self.stop)
        except Interrupted:
            return
        if self.stop.signum is not None:
            return  # a cell cut short is no measurement
        cell = MatrixCell.of(planned.release, summary, soak.report_dir, planned.scenario)
        table.cells[key] = with_evidence(_kept(key, cell, environment, fingerprint), known)
        self.measured += 1
        print(f"{step}: {cell.verdict} ({_signatures_text(cell) or 'no errors'}, {cell.wall_seconds:.0f}s)", flush=True)
        self.save()


def measured_cells(table: HealthTable) -> dict[str, Measured]:
    """The table's cells as the history check reads them (a cell that could not be built is left out)."""
    return {
        key: Measured(
            held.cell.verdict or held.cell.status,
            frozenset(held.evidence or _signatures(held.cell)),
            held.cell.status == "ran",
        )
        for key, held in table.cells.items()
        if held.cell.status in ("ran", "skipped")
    }


def catalogue_checks(table: HealthTable) -> list[FixCheck]:
    """The catalogue's fixes and introductions against the cells this table holds."""
    return check_catalogue(measured_cells(table), table.published)


def catalogue_boundaries_within(table: HealthTable, published: list[str], ws_columns: list[str]) -> list[Boundary]:
    """Either side of every release the catalogue names, within the table's releases."""
    oldest, newest = min(table.releases, key=Version), max(table.releases, key=Version)
    return [
        boundary
        for boundary in catalogue_boundaries(published, ws_columns)
        if Version(oldest) <= Version(boundary.after) <= Version(newest)
    ]


def whole_time(template: SoakConfig) -> SoakConfig:
    """The soak of a catalogue boundary cell: its whole time (at most ``CATALOGUE_CELL_SECONDS``)."""
    settings = dataclasses.replace(template.settings, duration=min(template.settings.duration, CATALOGUE_CELL_SECONDS))
    return dataclasses.replace(
        template, settings=settings, options=dataclasses.replace(template.options, until_verdict=False)
    )


def boundary_plan(boundaries: list[Boundary], grid: list[PlannedCell]) -> list[PlannedCell]:
    """The cells the boundaries need that the grid does not already hold, each once, in order."""
    planned: dict[tuple[str, str, str, str], PlannedCell] = {}
    in_grid = {(cell.release, cell.ws, cell.mode, cell.scenario) for cell in grid}
    for boundary in boundaries:
        for release, ws, mode, scenario in boundary.cells():
            if (release, ws, mode, scenario) not in in_grid:
                planned.setdefault((release, ws, mode, scenario), PlannedCell(release, ws, mode, scenario=scenario))
    return list(planned.values())


def with_evidence(fresh: HealthCell, earlier: HealthCell | None) -> HealthCell:
    """``fresh`` with what earlier soaks of the same cell in the same environment found added to its evidence."""
    found = _signatures(fresh.cell) if fresh.cell.status == "ran" else {}
    if earlier is None or earlier.environment != fresh.environment or earlier.cell.status != "ran":
        return dataclasses.replace(fresh, evidence=found, soaks=1)
    evidence = dict(earlier.evidence or _signatures(earlier.cell))
    for name, count in found.items():
        evidence[name] = evidence.get(name, 0) + count
    return dataclasses.replace(fresh, evidence=dict(sorted(evidence.items())), soaks=earlier.soaks + 1)


def _kept(key: str, cell: MatrixCell, environment: str | None, fingerprint: str) -> HealthCell:
    return HealthCell(
        key, cell, __version__, environment, fingerprint, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )


def _save(table: HealthTable, state_path: Path, output: Path, plan: list[PlannedCell]) -> None:
    table.write(state_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(table, plan))


def _signatures(cell: MatrixCell) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, count in cell.errors.items():
        signature = key.split(":", 1)[1]
        counts[signature] = counts.get(signature, 0) + count
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def _signatures_text(cell: MatrixCell) -> str:
    return ", ".join(f"{name} {count}" for name, count in _signatures(cell).items())


def _cell_text(cell: HealthCell | None) -> str:
    if cell is None:
        return "not measured yet"
    found = cell.cell
    if found.status != "ran":
        return f"{found.status}: {found.reason}".replace("|", "\\|")
    seen = cell.evidence or _signatures(found)
    names = ", ".join(
        f"[`{name}`]({CATALOGUE_LINK}) {count}" for name, count in sorted(seen.items(), key=lambda item: -item[1])
    )
    soaks = f" ({cell.soaks} soaks)" if cell.soaks > 1 else ""
    wall = f", {found.wall_seconds:.0f} s" if found.wall_seconds is not None else ""
    return f"**{found.verdict}**" + (f": {names}" if names else "") + wall + soaks


def markdown(table: HealthTable, plan: list[PlannedCell]) -> str:
    grid = [p for p in plan if (p.mode, p.scenario) == (DEFAULT_MODE, MIX)]
    keys = {(p.release, p.ws): cell_key(p.release, p.ws, p.mode, p.scenario) for p in grid}
    held = [table.cells[key] for key in keys.values() if key in table.cells]
    ran = [cell for cell in held if cell.cell.status == "ran"]
    soak_seconds = sum(cell.cell.wall_seconds or 0 for cell in ran)
    lines = [
        "# Release health: handshake-time shutdown errors per uvicorn release",
        "",
        "Generated by `handshake-chaos health` (resumable: run it again to fill or refresh the table; the cells",
        "measured with the same tool version, release environment and soak settings are kept). Each row is the",
        "newest patch of a minor release, its environment resolved as of its own publication; each cell one soak",
        f"under `{DEFAULT_MODE}` ({DEFAULT_SERVER}), every scenario that applies mixed, stopped once its verdict",
        f"settled (`--until-verdict`; at most {table.duration_cap_seconds:g} s, {table.users} users). A signature",
        "links to the catalogue of known failures; the number is its count in that soak. A mixed soak names",
        "#596's text by its code path only where the release's code has one path open; the boundary cells",
        "below, one scenario each, name it exactly.",
        "",
        f"Cells: {len(ran)} measured, {len(held) - len(ran)} skipped or not built, {len(keys) - len(held)} not yet "
        f"measured. Their soaks took {soak_seconds:.0f} s; the sittings so far {table.sittings_wall_seconds:.0f} s "
        f"(wall), the last one measuring {table.last_sitting_measured} cells in "
        f"{table.last_sitting_wall_seconds:.0f} s.",
        "",
        "| uvicorn | " + " | ".join(table.ws) + " |",
        "|---|" + "---|" * len(table.ws),
    ]
    for release in table.releases:
        cells = [_cell_text(table.cells.get(keys.get((release, ws), ""))) for ws in table.ws]
        lines.append(f"| {release} | " + " | ".join(cells) + " |")
    lines += _boundary_section(table)
    lines += _catalogue_section(table)
    return "\n".join(lines) + "\n"


def _boundary_section(table: HealthTable) -> list[str]:
    boundaries = [
        Boundary(**{**data, "scenarios": tuple(data["scenarios"]), "modes": tuple(data["modes"])})
        for data in table.boundaries
    ]
    if not boundaries:
        return []
    beyond = [held for held in table.cells.values() if not held.key.endswith(f":{DEFAULT_MODE}:{MIX}")]
    ran = [held for held in beyond if held.cell.status == "ran"]
    soaks = sum(held.soaks for held in ran)
    lines = [
        "",
        "## Either side of every boundary",
        "",
        "For each release the catalogue says brought or fixed a failure, and each pair of rows above whose",
        "catalogued signatures differ: the releases on both sides, each scenario that names a path measured",
        "singly, and (for a measured change) every other mode with the scenarios mixed. A cell that pins a",
        f"catalogue claim runs its whole time (at most {CATALOGUE_CELL_SECONDS:g} s, no early verdict): a verdict",
        "settled on another failure first would hide the one the claim is about. Evidence adds up: a",
        "signature found by any soak of a cell (same environment) counts, the number being all of them.",
        "",
        f"Boundary cells: {len(ran)} measured ({soaks} soaks), {len(beyond) - len(ran)} skipped (the state or",
        "mode does not exist there).",
    ]
    for boundary in boundaries:
        lines += ["", f"### {boundary.before} → {boundary.after} ({boundary.ws}): {boundary.why}", ""]
        lines += ["| cell | " + boundary.before + " | " + boundary.after + " |", "|---|---|---|"]
        rows = [(DEFAULT_MODE, name) for name in boundary.scenarios] + [(mode, MIX) for mode in boundary.modes]
        for mode, scenario in rows:
            label = scenario if mode == DEFAULT_MODE else f"{mode} ({scenario})"
            sides = [
                _cell_text(table.cells.get(cell_key(release, boundary.ws, mode, scenario)))
                for release in (boundary.before, boundary.after)
            ]
            lines.append(f"| {label} | " + " | ".join(sides) + " |")
    return lines


def _catalogue_section(table: HealthTable) -> list[str]:
    checks = catalogue_checks(table)
    if not checks:
        return []
    lines = [
        "",
        "## The catalogue against this table",
        "",
        "Each release the catalogue names as a fix (or an introduction), checked against the cells either",
        "side of it: a fix is confirmed when the release before it shows the failure in one of its scenarios",
        "and the fix release shows it in none. The test suite runs the same check over this table.",
        "",
    ]
    lines += [f"- {check.line()}" for check in checks]
    return lines
