"""The same matrix with and without ``--until-verdict``: wall time, and whether every verdict agrees.

    .venv/bin/python benchmarks/until_verdict.py [--duration 30s] [--users 100] [--mode worker-term ...]

Runs ``handshake-chaos matrix`` twice over uvicorn 0.19.0, 0.20.0 and the newest release x
wsproto, websockets and websockets-sansio (a release without an implementation skips that cell,
as the matrix itself does): once to the end of ``--duration`` (``--no-until-verdict``), once
stopping each cell as soon as its verdict settles. Environments are built first (cached), so the
two timings compare soaks, not builds. Prints both wall times, their ratio, every cell's two
verdicts and why the fast cell stopped; exits 1 if any verdict differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RELEASES = ("0.19.0", "0.20.0", "latest")
WS = ("wsproto", "websockets", "websockets-sansio")


def _matrix(
    report: Path, duration: str, users: int, modes: list[str], until_verdict: bool
) -> tuple[float, dict[str, Any]]:
    command = [sys.executable, "-m", "chaos", "matrix", "--uvicorn", *RELEASES, "--ws", *WS, "--mode", *modes]
    command += ["--duration", duration, "--users", str(users), "--metrics-port", "0", "--report-dir", str(report)]
    command.append("--until-verdict" if until_verdict else "--no-until-verdict")
    started = time.monotonic()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600, check=False)
    return time.monotonic() - started, json.loads((report / "matrix.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--users", type=int, default=100)  # the matrix's own default
    parser.add_argument("--mode", nargs="+", default=["worker-term"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="until-verdict-") as scratch:
        root = Path(scratch)
        # Warm-up: builds (or finds) every environment, so neither timing pays for a build.
        _matrix(root / "warm", "5s", 5, args.mode[:1], until_verdict=True)
        full_seconds, full = _matrix(root / "full", args.duration, args.users, args.mode, until_verdict=False)
        fast_seconds, fast = _matrix(root / "fast", args.duration, args.users, args.mode, until_verdict=True)
    disagreements = 0
    print(f"{'cell':<40} {'full':<14} {'until-verdict':<14} why the fast cell stopped")
    for slow_cell, fast_cell in zip(full["cells"], fast["cells"], strict=True):
        name = f"{slow_cell['release']} {slow_cell['ws']} {slow_cell['mode']}"
        same = slow_cell["verdict"] == fast_cell["verdict"]
        disagreements += not same
        walls = [cell.get("wall_seconds") for cell in (slow_cell, fast_cell)]
        shown = [
            f"{cell['verdict']} {wall:.0f}s" if wall else cell["verdict"]
            for cell, wall in zip((slow_cell, fast_cell), walls, strict=True)
        ]
        print(
            f"{name:<40} {shown[0]:<14} {shown[1]:<14} {'' if same else 'DIFFERS '}{fast_cell.get('stop_reason') or ''}"
        )
    agreement = "agree" if not disagreements else f"differ in {disagreements} cells"
    print(
        f"wall time: full {full_seconds:.0f}s, until-verdict {fast_seconds:.0f}s "
        f"({fast_seconds / full_seconds:.2f}x); verdicts {agreement}"
    )
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
