"""The wheel on its own: installed into a fresh virtualenv in a directory with no checkout, it soaks."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.helpers import ROOT, read_summary

_596 = "uvicorn_596_wsproto_close_during_handshake"


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh virtualenv holding only the built wheel and its dependencies."""
    uv = str(find_uv_bin())
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(base / "dist"), str(ROOT)], check=True, timeout=300)
    [wheel] = (base / "dist").glob("handshake_chaos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for packaged in (
        "chaos/locust_plugin/locustfile.py",
        "chaos/deployment/side/handshake_chaos_probe.py",
        "chaos/report/dashboards/handshake-chaos.json",
        "chaos/report/dashboards/provisioning/datasources/prometheus.yml",
        "chaos/report/dashboards/runbook.md",
        "chaos/report/dashboards/alerts.yml",
    ):
        assert packaged in names, packaged
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(base / "venv")], check=True, timeout=120)
    install = [uv, "pip", "install", "--quiet", "--python", str(base / "venv" / "bin" / "python"), str(wheel)]
    subprocess.run(install, check=True, timeout=600)
    return base / "venv" / "bin"


def test_the_wheel_soaks_0_19_0_and_finds_596_with_no_checkout(installed_wheel, tmp_path, release_cache):
    workdir = tmp_path / "elsewhere"  # no checkout here, nor above: only the installed wheel
    workdir.mkdir()
    report = workdir / "report"
    done = subprocess.run(
        [str(installed_wheel / "handshake-chaos"), "soak", "--uvicorn", "0.19.0", "--ws", "wsproto"]
        + ["--duration", "10s", "--users", "30", "--hold-seconds", "1", "--term-interval", "1"]
        + ["--metrics-port", "0", "--report-dir", str(report), "--cache-dir", str(release_cache)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    summary = read_summary(report / "summary.json")
    assert {row["signature"] for row in summary["errors"]} >= {_596}
    command = summary["soak"]["command"]
    # The wheel's own interpreter ran the wheel's own locustfile, not the checkout's.
    assert command[0].startswith(str(installed_wheel.parent))
    assert command[command.index("-f") + 1].startswith(str(installed_wheel.parent))


def test_the_wheel_writes_its_dashboards_and_runs_locust(installed_wheel, tmp_path):
    done = subprocess.run(
        [str(installed_wheel / "handshake-chaos"), "dashboards", str(tmp_path / "grafana")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "grafana" / "handshake-chaos.json").read_text() == (
        ROOT / "dashboards" / "handshake-chaos.json"
    ).read_text()
    assert (tmp_path / "grafana" / "provisioning" / "dashboards" / "handshake-chaos.yml").is_file()
    shown = subprocess.run(
        [str(installed_wheel / "handshake-chaos"), "locust", "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "HandshakeUser" in shown.stdout, (
        shown.stdout + shown.stderr
    )  # the packaged locustfile
