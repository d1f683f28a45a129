"""``handshake-chaos``: the command-line edge. Builds configs, validates, then acts."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence

from chaos import __version__
from chaos.controller import SIGNALS, ControllerConfig, RollingTermController
from chaos.durations import parse_duration
from chaos.errors import ChaosError
from chaos.processes import GunicornMaster, read_pidfile

log = logging.getLogger("handshake-chaos")


class SignalFlag:
    """Set from a signal handler; the handler does nothing else."""

    def __init__(self) -> None:
        self._set = False

    def set(self, *_args: object) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic())))
        return self._set


class _Deadline(SignalFlag):
    """A stop flag that also sets itself once ``seconds`` have passed."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self._end = None if seconds is None else time.monotonic() + seconds

    def is_set(self) -> bool:
        if self._end is not None and time.monotonic() >= self._end:
            self._set = True
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._end is not None:
            remaining = max(0.0, self._end - time.monotonic())
            timeout = remaining if timeout is None else min(timeout, remaining)
        super().wait(timeout)
        return self.is_set()


def _controller_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("controller", help="roll TERM through the workers of a running gunicorn master")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pid", type=int, help="gunicorn master pid")
    where.add_argument("--pidfile", help="gunicorn pidfile")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between signals (default: 3)")
    parser.add_argument("--jitter", type=float, default=1.0, help="random extra seconds per interval (default: 1)")
    parser.add_argument("--min-alive", type=int, default=1, help="keep at least this many workers (default: 1)")
    parser.add_argument("--signal", default="TERM", choices=sorted(SIGNALS), help="signal to send (default: TERM)")
    parser.add_argument("--max-signals", type=int, default=None, help="stop after this many signals")
    parser.add_argument("--duration", default=None, help="stop after this long (e.g. 45s, 10m)")
    parser.add_argument("--dry-run", action="store_true", help="log what would be signalled, signal nothing")
    parser.add_argument("--json", action="store_true", help="print the signal records as JSON at the end")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handshake-chaos", description=__doc__)
    parser.add_argument("--version", action="version", version=f"handshake-chaos {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _controller_parser(subparsers)
    return parser


def run_controller(args: argparse.Namespace) -> int:
    config = ControllerConfig(
        interval=args.interval,
        jitter=args.jitter,
        min_alive=args.min_alive,
        dry_run=args.dry_run,
        signal_name=args.signal,
        max_signals=args.max_signals,
    )
    duration = parse_duration(args.duration) if args.duration is not None else None
    master = GunicornMaster(args.pid if args.pid is not None else read_pidfile(args.pidfile))
    config.validate(len(master.workers()))
    stop = _Deadline(duration)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop.set)
    controller = RollingTermController(master, config)
    state = controller.run(stop)
    if args.json:
        print(json.dumps([record.as_dict() for record in state.records], indent=2))
    print(
        f"signals sent: {state.sent}, would-send (dry-run): {len(state.records) - state.sent}, "
        f"skipped for min-alive: {state.skipped_min_alive}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "controller":
            return run_controller(args)
    except ChaosError as exc:
        print(f"handshake-chaos: {exc}", file=sys.stderr)
        return exc.exit_code
    return 2
