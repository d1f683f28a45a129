"""Interrupt soaks at random moments and count what is left behind.

    .venv/bin/python benchmarks/interrupts.py [RUNS]   (default 20)

Each run starts ``handshake-chaos soak`` of this interpreter's uvicorn (8 s, 20 users), sends it
SIGINT or SIGTERM (chosen at random) after a random delay within its whole life (start-up, load,
report), and then checks: every process it started has stopped (within 30 s), the exit code is the
summary's, and the summary exists whenever the load had started. Prints one line per run and the
totals.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

_BOUND_SECONDS = 30.0


def _descendants(root: int, seen: dict[int, float]) -> None:
    try:
        for child in psutil.Process(root).children(recursive=True):
            try:
                seen.setdefault(child.pid, child.create_time())
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return


def _alive(seen: dict[int, float]) -> list[int]:
    alive = []
    for pid, created in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def one_run(index: int, rng: random.Random, workdir: Path) -> bool:
    report = workdir / f"run-{index}"
    signum = rng.choice([signal.SIGINT, signal.SIGTERM])
    delay = rng.uniform(0.0, 14.0)
    command = [sys.executable, "-m", "chaos", "soak", "--target-python", sys.executable, "--ws", "auto"]
    command += ["--duration", "8s", "--users", "20", "--hold-seconds", "1", "--term-interval", "1"]
    command += ["--metrics-port", "0", "--report-dir", str(report)]
    soak = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: dict[int, float] = {}
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and soak.poll() is None:
        _descendants(soak.pid, seen)
        time.sleep(0.05)
    load_started = (report / "locust.log").is_file() and "Ramping to" in (report / "locust.log").read_text()
    if soak.poll() is None:
        soak.send_signal(signum)
    try:
        _, stderr = soak.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        soak.kill()
        _, stderr = soak.communicate()
    bound = time.monotonic() + _BOUND_SECONDS
    while _alive(seen) and time.monotonic() < bound:
        time.sleep(0.1)
    left = _alive(seen)
    summary = report / "summary.json"
    summary_ok = summary.is_file() or not load_started
    traceback = "Traceback" in stderr
    clean = not left and summary_ok and not traceback
    print(
        f"run {index:2d}: {signal.Signals(signum).name} after {delay:5.2f}s, load started: {load_started!s:5}, "
        f"exit {soak.returncode}, processes left: {len(left)}, summary: {summary.is_file()}, "
        f"{'ok' if clean else 'NOT CLEAN'}",
        flush=True,
    )
    return clean


def main() -> int:
    # Started in the background, this process (and every soak it starts) would ignore SIGINT.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rng = random.Random()
    with tempfile.TemporaryDirectory(prefix="handshake-chaos-interrupts-") as workdir:
        clean = sum(one_run(index, rng, Path(workdir)) for index in range(1, runs + 1))
    print(f"{runs} interrupted soaks: {clean} clean, {runs - clean} left something behind or lost the summary")
    return 0 if clean == runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
