"""What release history says: where the measured signatures change, and whether the catalogue agrees.

Pure logic over the health table's cells (``docs/health.json``, keyed ``release:ws:mode:scenario``) and
the catalogue; ``handshake-chaos health`` plans its boundary cells from it and prints the check, and
the test suite runs the same check over the committed table, so a wrong ``fixed_in`` fails CI
instead of printing a wrong regression claim.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from chaos import catalog
from chaos.results import DEFAULT_MODE, MIX, MODES, Mode, Scenario
from chaos.scenarios import SCENARIO_SPECS

# The scenarios a boundary is measured in singly: those the bundled probe plays with no extra setup
# (tls-handshake needs --tls, app the user's own route).
BOUNDARY_SCENARIOS: tuple[Scenario, ...] = tuple(
    name for name, spec in SCENARIO_SPECS.items() if spec.route == "probe" and not spec.needs_tls
)


def cell_key(release: str, ws: str, mode: str = DEFAULT_MODE, scenario: str = MIX) -> str:
    return ":".join([release, ws, mode, scenario])


@dataclass(frozen=True)
class Measured:
    """What one cell of the table found. A cell skipped because its state cannot happen in that release
    (``ran`` False) shows no signature; a cell that could not be built is no measurement at all."""

    verdict: str
    signatures: frozenset[str]
    ran: bool = True


@dataclass(frozen=True)
class Boundary:
    """Two releases on either side of a change, in one ws implementation, and the cells that pin it."""

    ws: str
    before: str
    after: str
    why: str
    scenarios: tuple[str, ...]  # measured singly on both sides (MIX: every scenario that applies, mixed)
    modes: tuple[Mode, ...] = ()  # measured with the mix on both sides, besides worker-term

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Boundary:
        return cls(
            str(data["ws"]),
            str(data["before"]),
            str(data["after"]),
            str(data["why"]),
            tuple(data["scenarios"]),
            tuple(data.get("modes") or ()),
        )

    def cells(self) -> list[tuple[str, str, Mode, str]]:
        """(release, ws, mode, scenario) of every cell this boundary needs, both sides."""
        # Both sides of one cell before the next: a sitting cut short (--limit) still holds pairs.
        sides = (self.before, self.after)
        wanted = [(release, self.ws, DEFAULT_MODE, name) for name in self.scenarios for release in sides]
        wanted += [(release, self.ws, mode, MIX) for mode in self.modes for release in sides]
        return wanted


def previous_release(version: str, published: Iterable[str]) -> str | None:
    """The newest stable release published before ``version``."""
    floor = Version(version)
    earlier = [Version(text) for text in published if _stable(text) and Version(text) < floor]
    if not earlier:
        return None
    newest = max(earlier)
    return next(text for text in published if _stable(text) and Version(text) == newest)


def _stable(text: str) -> bool:
    try:
        return not Version(text).is_prerelease
    except InvalidVersion:
        return False


def catalogue_boundaries(published: Iterable[str], ws_columns: Iterable[str]) -> list[Boundary]:
    """Either side of every release the catalogue says brought or fixed a failure."""
    releases = list(published)
    columns = set(ws_columns)
    found: list[Boundary] = []
    for entry in catalog.ERROR_ENTRIES:
        marks = [("fixed", ws, version) for ws, version in entry.fixed_in.items() if version]
        marks += [("introduced", ws, version) for ws, version in entry.introduced_in.items()]
        for what, ws, version in marks:
            before = previous_release(version, releases)
            if ws not in columns or before is None or version not in releases:
                continue
            why = f"catalogue: `{entry.signature}` {what} in {version} ({ws})"
            found.append(Boundary(ws, before, version, why, entry.scenarios or (MIX,)))
    return found


def measured_boundaries(
    cells: Mapping[str, Measured], releases: list[str], ws_columns: Iterable[str]
) -> list[Boundary]:
    """Consecutive rows of the grid (worker-term, the mix) whose catalogued signatures differ."""
    found: list[Boundary] = []
    other_modes = tuple(mode for mode in MODES if mode != DEFAULT_MODE)
    for ws in ws_columns:
        ran = [
            (release, measured.signatures)
            for release in releases
            if (measured := cells.get(cell_key(release, ws))) is not None and measured.ran
        ]
        for (before, earlier), (after, later) in itertools.pairwise(ran):
            gone, came = _catalogued(earlier) - _catalogued(later), _catalogued(later) - _catalogued(earlier)
            if not gone and not came:
                continue
            change = "; ".join(
                part
                for part in (
                    "gone: " + ", ".join(f"`{name}`" for name in sorted(gone)) if gone else "",
                    "new: " + ", ".join(f"`{name}`" for name in sorted(came)) if came else "",
                )
                if part
            )
            found.append(Boundary(ws, before, after, f"measured: {change}", BOUNDARY_SCENARIOS, other_modes))
    return found


def _catalogued(signatures: frozenset[str]) -> frozenset[str]:
    """The signatures the catalogue names a code path for (generic ones flicker with timing)."""
    return frozenset(name for name in signatures if catalog.known(name) is not None)


Finding = Literal["confirmed", "contradicted", "unmeasured"]
Claim = Literal["fixed", "introduced"]


@dataclass(frozen=True)
class FixCheck:
    """One catalogue claim (``signature`` fixed or introduced in ``after`` for ``ws``) against the table."""

    signature: str
    ws: str
    claim: Claim
    before: str
    after: str
    finding: Finding
    detail: str

    def line(self) -> str:
        return f"{self.finding}: `{self.signature}` {self.claim} in {self.after} ({self.ws}): {self.detail}"


def check_catalogue(cells: Mapping[str, Measured], published: Iterable[str]) -> list[FixCheck]:
    """Every catalogue ``fixed_in``/``introduced_in`` against the measured cells on either side of it.

    A fix is confirmed when the last release before it shows the signature in one of its scenarios
    and the fix release shows it in none; an introduction the other way round. A cell that could not
    run there (the state does not exist in that release) counts as not showing it."""
    releases = list(published)
    checks: list[FixCheck] = []
    for entry in catalog.ERROR_ENTRIES:
        claims: list[tuple[Claim, str, str]] = [("fixed", ws, v) for ws, v in entry.fixed_in.items() if v]
        claims += [("introduced", ws, version) for ws, version in entry.introduced_in.items()]
        for claim, ws, version in claims:
            before = previous_release(version, releases)
            if before is None or version not in releases:
                continue
            scenarios = entry.scenarios or (MIX,)
            # A cell shows the failure when it names this path, or shows its text under the name of no path in
            # a state where no other path of that text is open (the text there can only be this one).
            named = {entry.signature} | ({entry.client_symptom} if entry.client_symptom else set())
            shown = {
                release: _shows(
                    cells, release, ws, {name: named | _alone(entry, name, ws, release) for name in scenarios}
                )
                for release in (before, version)
            }
            shown_before, shown_after = shown[before], shown[version]
            expected = (True, False) if claim == "fixed" else (False, True)
            where = " or ".join(scenarios)
            if shown_before is None or shown_after is None:
                missing = [release for release, found in shown.items() if found is None]
                finding: Finding = "unmeasured"
                detail = f"no {where} cell measured for {' and '.join(missing)}"
            else:
                finding = "confirmed" if (shown_before, shown_after) == expected else "contradicted"
                detail = f"{before} {_said(shown_before)}, {version} {_said(shown_after)} (in {where})"
            checks.append(FixCheck(entry.signature, ws, claim, before, version, finding, detail))
    return checks


def _said(shown: bool) -> str:
    return "shows it" if shown else "does not"


def _unnamed(entry: catalog.KnownFailure) -> list[str]:
    """The entry naming no code path among those that share ``entry``'s text."""
    return [
        other.signature
        for other in catalog.ERROR_ENTRIES
        if other.pattern.pattern == entry.pattern.pattern and not other.scenarios and other is not entry
    ]


def _alone(entry: catalog.KnownFailure, scenario: str, ws: str, release: str) -> set[str]:
    """The text's unnamed signature, when no other path of ``entry``'s text that reaches ``scenario`` is open
    in ``release``: the text there can only be this path (a soak whose catalogue then thought otherwise
    named it so). In a mix the state is not known: nothing more."""
    others = [
        other
        for other in catalog.ERROR_ENTRIES
        if other.pattern.pattern == entry.pattern.pattern and other is not entry and other.scenarios
    ]
    if scenario == MIX or any(scenario in other.scenarios and other.open_in(ws, release) for other in others):
        return set()
    return set(_unnamed(entry))


def _shows(cells: Mapping[str, Measured], release: str, ws: str, wanted: Mapping[str, set[str]]) -> bool | None:
    """Whether any of the release's cells, in a scenario of ``wanted``, found one of the signatures wanted
    there (None: none measured)."""
    measured = [(name, cells[key]) for name in wanted if (key := cell_key(release, ws, DEFAULT_MODE, name)) in cells]
    if not measured:
        return None
    return any(wanted[name] & cell.signatures for name, cell in measured)
