"""``chaos.history``: boundaries from the catalogue and from measured rows, and the catalogue checked
against history, over the committed ``docs/health.json`` too (a wrong ``fixed_in`` fails here)."""

from __future__ import annotations

from pathlib import Path

from chaos.commands.health import HealthTable, catalogue_checks
from chaos.history import (
    Measured,
    catalogue_boundaries,
    cell_key,
    check_catalogue,
    measured_boundaries,
    previous_release,
)
from tests.helpers import SIGNATURE_596

PUBLISHED = ["0.18.3", "0.19.0", "0.20.0rc1", "0.20.0", "0.21.0", "0.21.1"]
GENERIC = "wsproto_close_during_handshake"
HEALTH_JSON = Path(__file__).resolve().parent.parent / "docs" / "health.json"


def _596_check(cells: dict[str, Measured]) -> str:
    (check,) = [
        check
        for check in check_catalogue(cells, PUBLISHED)
        if check.signature == SIGNATURE_596 and check.ws == "wsproto"
    ]
    return check.finding


def test_the_release_before_is_the_newest_stable_one_published_before():
    assert previous_release("0.20.0", PUBLISHED) == "0.19.0"  # not the release candidate
    assert previous_release("0.18.3", PUBLISHED) is None


def test_every_catalogue_fix_and_introduction_is_a_boundary_with_the_scenarios_its_path_starts_in():
    boundaries = catalogue_boundaries(PUBLISHED, ["wsproto", "websockets"])
    fix_596 = next(b for b in boundaries if SIGNATURE_596 in b.why)
    assert (fix_596.before, fix_596.after, fix_596.ws) == ("0.19.0", "0.20.0", "wsproto")
    assert fix_596.scenarios == ("hold-accept", "before-receive", "deny-close") and not fix_596.modes
    # Both sides of one scenario before the next: a sitting cut short still holds pairs.
    assert fix_596.cells()[:2] == [
        ("0.19.0", "wsproto", "worker-term", "hold-accept"),
        ("0.20.0", "wsproto", "worker-term", "hold-accept"),
    ]
    # A column not in the table plans nothing (websockets-sansio here).
    assert all(b.ws in ("wsproto", "websockets") for b in boundaries)


def test_a_measured_boundary_is_a_change_of_catalogued_signatures_not_of_generic_ones():
    cells = {
        cell_key("0.19.0", "wsproto"): Measured("fail", frozenset({SIGNATURE_596, "worker_exit_nonzero"})),
        cell_key("0.20.0", "wsproto"): Measured("fail", frozenset({SIGNATURE_596})),
        cell_key("0.21.1", "wsproto"): Measured("pass", frozenset()),
    }
    (boundary,) = measured_boundaries(cells, ["0.19.0", "0.20.0", "0.21.1"], ["wsproto"])
    assert (boundary.before, boundary.after) == ("0.20.0", "0.21.1")
    assert boundary.why == f"measured: gone: `{SIGNATURE_596}`"
    assert "deny-stream" in boundary.scenarios and "tls-handshake" not in boundary.scenarios
    assert "master-hup" in boundary.modes and "worker-term" not in boundary.modes


def test_a_fix_is_confirmed_only_when_the_release_before_shows_it_and_the_fix_release_does_not():
    def cells(before: frozenset[str], after: frozenset[str]) -> dict[str, Measured]:
        return {
            cell_key("0.19.0", "wsproto", scenario="hold-accept"): Measured("fail", before),
            cell_key("0.20.0", "wsproto", scenario="hold-accept"): Measured("pass", after),
        }

    assert _596_check(cells(frozenset({SIGNATURE_596}), frozenset())) == "confirmed"
    # Still there in the "fix" release: under its own name or, no path being open, the text's generic one.
    assert _596_check(cells(frozenset({SIGNATURE_596}), frozenset({SIGNATURE_596}))) == "contradicted"
    assert _596_check(cells(frozenset({SIGNATURE_596}), frozenset({GENERIC}))) == "contradicted"
    # Never seen before the "fix": the claim has no evidence.
    assert _596_check(cells(frozenset(), frozenset())) == "contradicted"
    # The text under no path's name, in a state only this path reaches where it is open: it is this path (a
    # soak whose catalogue then thought no path open named it so).
    assert _596_check(cells(frozenset({GENERIC}), frozenset())) == "confirmed"
    # A state the fix release cannot have shows nothing there.
    skipped = cells(frozenset({SIGNATURE_596}), frozenset())
    skipped[cell_key("0.20.0", "wsproto", scenario="hold-accept")] = Measured("skipped", frozenset(), ran=False)
    assert _596_check(skipped) == "confirmed"
    assert _596_check({}) == "unmeasured"


def test_the_catalogue_agrees_with_the_committed_release_history():
    """Every catalogue fix and introduction against docs/health.json, as `handshake-chaos health` measured it."""
    table = HealthTable.read(HEALTH_JSON)
    checks = catalogue_checks(table)
    assert checks, "docs/health.json holds no release list: regenerate it with handshake-chaos health"
    wrong = [check.line() for check in checks if check.finding != "confirmed"]
    assert not wrong, "the catalogue disagrees with docs/health.json (or it lacks cells):\n" + "\n".join(wrong)


def test_a_failure_whose_log_text_depends_on_a_library_counts_its_client_symptom():
    """#1344 under websockets: uvicorn 0.20.0 still drops a pending handshake at shutdown, but the websockets
    release it requires (10.4) no longer logs it; the client's dropped connection shows it all the same."""
    from chaos import catalog

    entry = catalog.known("uvicorn_1344_websockets_handshake_closed_on_shutdown")
    assert entry is not None and entry.client_symptom == catalog.CLIENT_DROPPED
    cells = {
        cell_key("0.20.0", "websockets"): Measured("fail", frozenset({catalog.CLIENT_DROPPED})),
        cell_key("0.21.0", "websockets"): Measured("fail", frozenset({"uvicorn_accept_after_shutdown_rejection"})),
    }
    (check,) = [c for c in check_catalogue(cells, PUBLISHED) if c.signature == entry.signature]
    assert check.finding == "confirmed", check.line()
