"""The README's pictures, made from real runs of real releases in a real headless Chromium.

    .venv/bin/python scripts/screenshots.py [--cache-dir DIR] [--offline] [--out docs] [--keep]

What it runs (every run is the product's own command, against loopback only):

1. ``handshake-chaos soak`` of uvicorn 0.19.0 and of 0.55.0 with wsproto (``--until-verdict``, at most
   30 s each): a fail (#596) and a pass. Their terminal output is written beside the reports (with
   ``--keep``, for the README's "Reading the results" to quote); 0.19.0's ``report.html`` becomes
   ``docs/screenshot-report.png``.
2. ``handshake-chaos matrix`` of 0.19.0, 0.54.0 and 0.55.0 with wsproto: ``docs/screenshot-matrix.png``.
3. ``locust -f locustfiles/handshake.py`` with its web UI, the embedded deployment running uvicorn
   0.19.0's environment, started as the UI's Start button does (POST /swarm with the form's fields);
   once a few signals have landed, the Chaos signals and Chaos errors tabs become
   ``docs/screenshot-chaos-signals.png`` and ``docs/screenshot-chaos-errors.png``.

The release environments are built, or reused, in ``--cache-dir`` as any soak does. ``--offline``
keeps even the package index off the network: the soak looks up each release's upload time to name
its environment, and with ``--offline`` that answer comes from a loopback index serving the times
recorded in the cached environments themselves (only releases already built there can run).

Chromium runs headless with a fresh profile, no background networking, and every host name but
127.0.0.1 unresolvable. A PNG over 300 KB is reduced to 256 colours when ImageMagick's ``convert`` is
there. Look at each picture before committing it.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FAILING, PASSING, MIDDLE = "0.19.0", "0.55.0", "0.54.0"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
MAX_PNG_BYTES = 300_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


def fetch(url: str, data: dict[str, str] | None = None) -> str:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:
        text: str = response.read().decode()
        return text


def metric_sum(url: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in fetch(url).splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )


# --offline: a loopback package index that knows only the cached environments' releases.


def recorded_upload_times(cache_dir: Path) -> dict[str, str]:
    """uvicorn version -> its upload time, as recorded by the environments built with the defaults."""
    found: dict[str, set[str]] = {}
    for manifest in cache_dir.glob("uvicorn-*/handshake-chaos-env.json"):
        data = json.loads(manifest.read_text())
        spec = data.get("spec", {})
        source = str(spec.get("uvicorn", ""))
        if spec.get("as_of") or "/" in source or source.endswith(".whl"):
            continue  # a pinned date or a source tree: not the release's own publication time
        published = datetime.strptime(data["as_of"], "%Y-%m-%dT%H:%M:%SZ") - timedelta(seconds=1)
        found.setdefault(data["uvicorn"], set()).add(published.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {version: times.pop() for version, times in found.items() if len(times) == 1}


def serve_index(cache_dir: Path) -> str:
    """Starts the loopback index (PEP 691 JSON) in a thread; returns its URL."""
    files = [
        {"filename": f"uvicorn-{version}-py3-none-any.whl", "upload-time": uploaded}
        for version, uploaded in sorted(recorded_upload_times(cache_dir).items())
    ]

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            known = self.path.rstrip("/") == "/simple/uvicorn"
            body = json.dumps({"meta": {"api-version": "1.0"}, "name": "uvicorn", "files": files}).encode()
            self.send_response(200 if known else 404)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body) if known else 0))
            self.end_headers()
            if known:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"screenshots: loopback index of {', '.join(f['filename'] for f in files)}", file=sys.stderr)
    return f"http://127.0.0.1:{server.server_address[1]}/simple"


# The runs.


def run(command: list[str], log: Path, env: dict[str, str], expect: set[int]) -> None:
    print("screenshots: $", " ".join(command), file=sys.stderr)
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900, check=False)
    if done.returncode not in expect:
        raise SystemExit(f"screenshots: exit {done.returncode} (expected {sorted(expect)}); see {log}")


def release_python(cache_dir: Path | None, version: str, env: dict[str, str]) -> str:
    """The interpreter of a release's environment, built or reused exactly as a soak would."""
    code = (
        "import sys; from pathlib import Path;"
        "from chaos.deployment.environments import ReleaseSpec, build_environment;"
        f"spec = ReleaseSpec(uvicorn={version!r}, ws_library='wsproto');"
        "print(build_environment(spec, Path(sys.argv[1]) if sys.argv[1] else None).python)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(cache_dir or "")], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def form_fields(page: str) -> dict[str, str]:
    """Every option field of the start form, as the UI posts it when nothing is edited."""
    match = re.search(r"window\.templateArgs = (\{.*?\})\s*</script>", page, re.DOTALL)
    if not match:
        raise SystemExit("screenshots: no start form in Locust's page")
    args = json.loads(match.group(1))
    fields = {}
    for name, field in args["extra_options"].items():
        default = field["default_value"]
        if isinstance(default, bool):
            fields[name] = "true" if default else "false"
        else:
            fields[name] = "" if default is None else str(default)
    return fields | {"host": args.get("host") or ""}


def screenshot(url: str, out: Path, width: int, height: int, wait_ms: int = 0) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory(prefix="hc-chromium-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        if wait_ms:
            command.append(f"--virtual-time-budget={wait_ms}")
        subprocess.run(
            [*command, f"--screenshot={out}", url], capture_output=True, timeout=120, check=True, cwd=profile
        )
    if out.stat().st_size > MAX_PNG_BYTES and shutil.which("convert"):
        subprocess.run(["convert", str(out), "-colors", "256", f"PNG8:{out}"], check=True)
    print(f"screenshots: {out} ({out.stat().st_size // 1024} KB)", file=sys.stderr)


def chaos_tabs(work: Path, out: Path, python: str, env: dict[str, str]) -> None:
    """Locust's web UI mid-run, its Chaos tabs shot while the run goes on."""
    web_port, metrics_port = free_port(), free_port()
    command = [str(BIN / "locust"), "-f", str(ROOT / "locustfiles" / "handshake.py"), "--web-host", "127.0.0.1"]
    command += ["--web-port", str(web_port), "--metrics-port", str(metrics_port), "--target-python", python]
    command += ["--ws", "wsproto", "--term-interval", "2", "--term-jitter", "0"]
    base, metrics = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{metrics_port}/metrics"
    log = (work / "locust-web-ui.log").open("w")
    locust = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: bool(fetch(f"{base}/")), 90, "Locust's web UI")
        form = form_fields(fetch(f"{base}/")) | {"user_count": "150", "spawn_rate": "50", "run_time": ""}
        if not json.loads(fetch(f"{base}/swarm", form))["success"]:
            raise SystemExit("screenshots: the web UI did not start the run")
        wait_until(lambda: metric_sum(metrics, "handshake_chaos_signals_total") >= 6, 120, "six signals")
        wait_until(lambda: metric_sum(metrics, "handshake_chaos_shutdown_errors_total") > 0, 60, "an error")
        time.sleep(3)  # the UI polls every few seconds
        screenshot(f"{base}/?tab=chaos-signals", out / "screenshot-chaos-signals.png", 1440, 620, 6000)
        screenshot(f"{base}/?tab=chaos-errors", out / "screenshot-chaos-errors.png", 1440, 430, 6000)
        fetch(f"{base}/stop", {})
    finally:
        locust.send_signal(signal.SIGINT)
        try:
            locust.wait(timeout=120)
        except subprocess.TimeoutExpired:
            locust.kill()
            locust.wait()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, help="release environments (default: the soak's own default)")
    parser.add_argument("--offline", action="store_true", help="answer the index look-ups from the cache (loopback)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default: docs/)")
    parser.add_argument("--keep", action="store_true", help="keep the runs' directory and say where it is")
    parser.add_argument("--only", choices=("soaks", "matrix", "web-ui"), action="append", help="only these steps")
    options = parser.parse_args()
    steps = set(options.only or ("soaks", "matrix", "web-ui"))
    env = dict(os.environ)
    cache = ["--cache-dir", str(options.cache_dir)] if options.cache_dir else []
    if options.offline:
        if not options.cache_dir:
            parser.error("--offline needs --cache-dir (the environments whose release times it serves)")
        env["UV_DEFAULT_INDEX"] = serve_index(options.cache_dir)
    options.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hc-screenshots-"))
    chaos = str(BIN / "handshake-chaos")
    short = ["--ws", "wsproto", "--duration", "30s", "--until-verdict", "--metrics-port", "0", *cache]
    try:
        if "soaks" in steps:
            for release, code in ((FAILING, 1), (PASSING, 0)):
                report = work / f"soak-{release}"
                command = [chaos, "soak", "--uvicorn", release, *short, "--report-dir", str(report)]
                run(command, work / f"soak-{release}.txt", env, {code})
            screenshot(
                (work / f"soak-{FAILING}" / "report.html").as_uri(), options.out / "screenshot-report.png", 1120, 1395
            )
        if "matrix" in steps:
            releases = [FAILING, MIDDLE, PASSING]
            command = [chaos, "matrix", "--uvicorn", *releases, *short, "--report-dir", str(work / "matrix")]
            run(command, work / "matrix.txt", env, {1})
            screenshot((work / "matrix" / "matrix.html").as_uri(), options.out / "screenshot-matrix.png", 1280, 560)
        if "web-ui" in steps:
            python = release_python(options.cache_dir, FAILING, env)
            chaos_tabs(work, options.out, python, env)
    finally:
        if options.keep:
            print(f"screenshots: the runs are in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
