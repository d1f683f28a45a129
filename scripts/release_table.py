"""Regenerates docs/releases.md: every uvicorn minor release from 0.19 on, built and booted.

    .venv/bin/python scripts/release_table.py > docs/releases.md

For each minor release (its newest patch) the release's environment is built as ``soak`` builds
it (dependencies as of the release's publication; cached), the versions the resolution picked
are read from the environment's own interpreter, and the embedded deployment is started with one
worker and asked for one real websocket handshake. A row says what was picked, which worker
class the launcher paired with it, and whether it booted (or the one line why not).
"""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from packaging.version import Version

from chaos.deployment.environments import ReleaseSpec, build_environment, published_versions
from chaos.deployment.launcher import Deployment, DeploymentConfig
from chaos.errors import ChaosError
from chaos.load.client import ACCEPTED, hold_handshake

FIRST_MINOR = Version("0.19.0")


def minors() -> list[str]:
    """The newest patch of every stable minor release from 0.19 on."""
    newest: dict[tuple[int, int], Version] = defaultdict(lambda: Version("0"))
    for text in published_versions("uvicorn"):
        version = Version(text)
        if version.is_prerelease or version < FIRST_MINOR:
            continue
        key = (version.major, version.minor)
        newest[key] = max(newest[key], version)
    return [str(newest[key]) for key in sorted(newest)]


def row(release: str) -> list[str]:
    try:
        environment = build_environment(ReleaseSpec(uvicorn=release))
        with tempfile.TemporaryDirectory(prefix="release-table-") as run_dir:
            config = DeploymentConfig(python=environment.python, workers=1, run_dir=Path(run_dir), startup_timeout=30)
            with Deployment(config) as target:
                versions = target.versions
                outcome = hold_handshake(f"{target.url}/ws/probe?hold=0&keep=0", keep_open=0.0).outcome
                booted = "yes" if outcome == ACCEPTED else f"no: handshake {outcome}"
                base = target.worker_base()
                ws = ", ".join(i for i in versions["ws_implementations"] if i != "auto")
    except ChaosError as exc:
        return [release, *([""] * 6), f"no: {exc}"]
    return [
        release,
        environment.as_of[:10],
        str(versions.get("gunicorn")),
        str(versions.get("uvicorn_worker") or "-"),
        f"{versions.get('websockets') or '-'} / {versions.get('wsproto') or '-'}",
        ws,
        base,
        booted,
    ]


def main() -> int:
    releases = minors()
    header = ["uvicorn", "as of", "gunicorn", "uvicorn-worker", "websockets / wsproto", "ws implementations"]
    header += ["worker class", "boots"]
    rows = []
    for release in releases:
        print(f"{release}...", file=sys.stderr, flush=True)
        rows.append(row(release))
    booted = sum(1 for cells in rows if cells[-1] == "yes")
    lines = [
        "# Every uvicorn minor release, built and booted",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d} by `scripts/release_table.py` (run it to refresh this file).",
        "Each row is the newest patch of a minor release, its environment resolved as of the release's",
        "own publication (what `handshake-chaos soak --uvicorn VERSION` builds), started as the embedded",
        "deployment with one worker and asked for one real websocket handshake.",
        "",
        "`worker class` is where the launcher took the gunicorn worker from: the `uvicorn-worker`",
        "package when it is installed and can run that uvicorn, else `uvicorn.workers`. uvicorn-worker",
        "0.3.0 cannot run uvicorn 0.36.0 or later and 0.4.0 can; 0.4.0 was published nine hours after",
        "uvicorn 0.36.0 on the same day, so 0.36.0's resolution picks 0.3.0 and the launcher pairs it",
        "with `uvicorn.workers` instead. Measured: uvicorn 0.36.0's environment (uvicorn-worker 0.3.0)",
        'fails to boot with the uvicorn-worker class ("Worker failed to boot", gunicorn exit 3) and boots',
        "with `uvicorn.workers`; `tests/deployment/test_environments.py` keeps that pairing honest.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in rows),
        "",
        f"{len(rows)} minor releases, {booted} boot.",
    ]
    print("\n".join(lines))
    return 0 if booted == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
