"""``handshake-chaos matrix``: its cells agree with their soaks; expectations and baselines."""

from __future__ import annotations

import json

from chaos.commands.matrix import judge_expectations, matrix_exit_code
from chaos.results import CellVerdict, MatrixCell
from tests.helpers import FAST, read_summary, run_cli, signatures


def test_matrix_over_two_releases_and_two_modes_agrees_with_its_soaks(tmp_path, release_cache):
    report = tmp_path / "matrix"
    done = run_cli(
        ["matrix", "--uvicorn", "0.19.0", "0.20.0", "--ws", "wsproto", "websockets-sansio", "--duration", "8s"]
        + ["--mode", "worker-term", "master-term"]
        + ["--users", "25", *FAST, "--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
        timeout=400,
    )
    assert done.returncode == 1, done.stdout[-3000:]
    for name in ("matrix.json", "matrix.md", "matrix.html", "matrix.txt"):
        assert (report / name).is_file()
    result = json.loads((report / "matrix.json").read_text())
    ran = [cell for cell in result["cells"] if cell["status"] == "ran"]
    skipped = [cell for cell in result["cells"] if cell["status"] == "skipped"]
    assert [(c["release"], c["ws"], c["mode"]) for c in ran] == [
        ("0.19.0", "wsproto", "worker-term"),
        ("0.19.0", "wsproto", "master-term"),
        ("0.20.0", "wsproto", "worker-term"),
        ("0.20.0", "wsproto", "master-term"),
    ]
    assert len(skipped) == 4 and all("websockets-sansio" in c["reason"] for c in skipped)
    markdown = (report / "matrix.md").read_text()
    for cell in ran:
        suffix = "" if cell["mode"] == "worker-term" else f"-{cell['mode']}"
        summary = read_summary(report / f"{cell['release']}-{cell['ws']}{suffix}" / "summary.json")
        assert (cell["verdict"], cell["mode"]) == (summary["gate"]["verdict"], summary["mode"])
        by_side: dict[str, int] = {}  # a signature found in several scenarios has a row for each
        for row in summary["errors"]:
            key = f"{row['side']}:{row['signature']}"
            by_side[key] = by_side.get(key, 0) + row["count"]
        assert cell["errors"] == by_side
        assert cell["stop_reason"] == summary["stop_reason"]
        for signature, count in signatures(summary).items():
            assert f"{signature} {count}" in markdown
    # --until-verdict is on in a matrix: the failing release's cells stop once their fail has settled.
    assert all(c["stop_reason"].startswith("verdict settled: fail") for c in ran if c["release"] == "0.19.0")
    assert "| master-term |" in markdown
    assert "<table>" in (report / "matrix.html").read_text()
    assert "0.19.0" in done.stdout and "skipped" in done.stdout


def _cell(release: str, ws: str, verdict: CellVerdict, errors: dict[str, int]) -> MatrixCell:
    return MatrixCell(uvicorn=release, release=release, ws=ws, status="ran", reason="", verdict=verdict, errors=errors)


def test_expected_failures_and_baselines():
    cells = [_cell("0.19.0", "wsproto", "fail", {"server:a": 3}), _cell("0.20.0", "wsproto", "pass", {})]
    judge_expectations(cells, expect_fail=("0.19.0:wsproto",), baseline_release=None)
    assert matrix_exit_code(cells) == 0
    cells = [_cell("0.19.0", "wsproto", "fail", {"server:a": 3}), _cell("rc", "wsproto", "fail", {"server:a": 1})]
    judge_expectations(cells, expect_fail=(), baseline_release="0.19.0")
    assert matrix_exit_code(cells) == 0  # no signature the baseline lacked
    cells = [_cell("0.19.0", "wsproto", "fail", {"server:a": 3}), _cell("rc", "wsproto", "fail", {"client:b": 1})]
    judge_expectations(cells, expect_fail=(), baseline_release="0.19.0")
    assert matrix_exit_code(cells) == 1 and cells[1].new_signatures == ["client:b"]


def test_expectations_and_baselines_follow_the_mode():
    def cell(release: str, mode: str, errors: dict[str, int]) -> MatrixCell:
        found = _cell(release, "wsproto", "fail" if errors else "pass", errors)
        found.mode = mode  # type: ignore[assignment]
        return found

    # The baseline failed under worker-term only: the same signature under master-term is new.
    cells = [
        cell("0.19.0", "worker-term", {"server:a": 3}),
        cell("0.19.0", "master-term", {}),
        cell("rc", "worker-term", {"server:a": 1}),
        cell("rc", "master-term", {"server:a": 1}),
    ]
    judge_expectations(cells, expect_fail=(), baseline_release="0.19.0")
    assert [c.new_signatures for c in cells[2:]] == [[], ["server:a"]] and matrix_exit_code(cells) == 1
    judge_expectations(cells, expect_fail=("rc:wsproto:master-term",), baseline_release="0.19.0")
    assert matrix_exit_code(cells) == 0
    judge_expectations(cells, expect_fail=("rc:wsproto:worker-term",), baseline_release=None)
    assert matrix_exit_code(cells) == 1
