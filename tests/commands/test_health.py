"""``handshake-chaos health``: which releases make the table, and a table filled over two sittings."""

from __future__ import annotations

import json

from chaos.commands.health import HealthTable, newest_patches
from tests.helpers import FAST, SIGNATURE_596, run_cli


def test_each_minor_release_is_its_newest_patch():
    published = ["0.18.3", "0.19.0", "0.24.0", "0.24.0.post1", "0.27.0", "0.27.0.post1", "0.27.1", "0.28.0rc1"]
    assert newest_patches(published, "0.19") == ["0.19.0", "0.24.0.post1", "0.27.1"]
    assert newest_patches(published, "0.25") == ["0.27.1"]


def test_the_table_is_resumable_a_measured_cell_is_kept(tmp_path, release_cache):
    args = ["health", "--uvicorn", "0.19.0", "--ws", "wsproto", "websockets-sansio", "--duration", "20s"]
    args += ["--users", "30", *FAST, "--until-verdict", "--cache-dir", str(release_cache)]
    args += ["--state", "health.json", "--output", "docs/health.md", "--report-dir", "reports", "--no-boundaries"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "[grid 1/2] 0.19.0 wsproto worker-term: fail" in first.stdout
    assert "[grid 2/2] 0.19.0 websockets-sansio worker-term: skipped" in first.stdout
    table = HealthTable.read(tmp_path / "health.json")
    cell = table.cells["0.19.0:wsproto:worker-term:mix"]
    assert cell.cell.verdict == "fail" and f"server:{SIGNATURE_596}" in cell.cell.errors
    assert cell.environment and cell.environment.startswith("uvicorn-0.19.0-") and cell.tool_version
    page = (tmp_path / "docs" / "health.md").read_text()
    assert f"| 0.19.0 | **fail**: [`{SIGNATURE_596}`](contract.md#the-catalogue-of-known-failures)" in page
    assert "1 measured, 1 skipped or not built, 0 not yet measured" in page
    # The second sitting keeps the cell: same tool version, environment and settings.
    second = run_cli(args, tmp_path)
    assert second.returncode == 0 and "0.19.0 wsproto worker-term: fail (measured " in second.stdout, second.stdout
    assert "soaking" not in second.stdout
    kept = json.loads((tmp_path / "health.json").read_text())
    assert kept["cells"]["0.19.0:wsproto:worker-term:mix"] == cell.to_json()
    assert kept["last_sitting_measured"] == 0 and kept["sittings_wall_seconds"] >= table.sittings_wall_seconds
    # --limit 0 builds and runs nothing: the page is written again from what the table holds.
    third = run_cli([*args, "--limit", "0"], tmp_path)
    assert "0.19.0 wsproto worker-term: fail (kept) (--limit 0)" in third.stdout, third.stdout
    # Other soak settings are another measurement: the cell is run again.
    fourth = run_cli([*args, "--users", "20"], tmp_path)
    assert "[grid 1/2] 0.19.0 wsproto worker-term: soaking" in fourth.stdout, fourth.stdout
    assert HealthTable.read(tmp_path / "health.json").cells[cell.key].settings != cell.settings


def test_a_sitting_measures_both_sides_of_a_catalogue_fix_and_checks_the_catalogue_against_them(
    tmp_path, release_cache
):
    """0.19.0 -> 0.20.0 under wsproto: the grid, then #596's fix pinned by a hold-accept cell on each side."""
    args = ["health", "--uvicorn", "0.19.0", "0.20.0", "--ws", "wsproto", "--duration", "20s", "--users", "30"]
    args += [*FAST, "--until-verdict", "--cache-dir", str(release_cache), "--limit", "4"]
    args += ["--state", "health.json", "--output", "health.md", "--report-dir", "reports"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    out = result.stdout
    assert "[grid 1/2] 0.19.0 wsproto worker-term: fail" in out and "[grid 2/2] 0.20.0 wsproto worker-term:" in out
    assert "0.19.0 wsproto worker-term hold-accept: fail" in out, out
    assert "0.20.0 wsproto worker-term hold-accept: " in out, out  # its other failures are not #596
    assert "0.19.0 wsproto worker-term before-receive: not measured (--limit 4)" in out
    assert f"catalogue confirmed: `{SIGNATURE_596}` fixed in 0.20.0 (wsproto)" in out, out
    page = (tmp_path / "health.md").read_text()
    assert f"### 0.19.0 → 0.20.0 (wsproto): catalogue: `{SIGNATURE_596}` fixed in 0.20.0 (wsproto)" in page
    assert f"- confirmed: `{SIGNATURE_596}` fixed in 0.20.0 (wsproto): 0.19.0 shows it, 0.20.0 does not" in page
    table = HealthTable.read(tmp_path / "health.json")
    assert "0.20.0:wsproto:worker-term:hold-accept" in table.cells and "0.19.0" in table.published
