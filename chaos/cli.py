"""``handshake-chaos``: the command-line edge. Builds configs, validates, then acts."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from chaos import __version__
from chaos.controller import SIGNALS
from chaos.durations import parse_duration
from chaos.errors import ChaosError
from chaos.matrix import MatrixConfig, run_matrix
from chaos.matrixreport import terminal
from chaos.options import ChaosOptions
from chaos.processes import GunicornMaster, read_pidfile
from chaos.session import ChaosSession
from chaos.soak import SoakConfig, run_soak, soak_exit_code

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
    parser.add_argument("--server-log", default=None, help="the deployment's error log, for server-side detection")
    parser.add_argument("--release", default=None, help="release label (default: the deployment's uvicorn version)")
    parser.add_argument("--ws", default="auto", help="ws label of the metrics (default: auto)")
    parser.add_argument("--metrics-port", type=int, default=9646, help="port of /metrics (default: 9646; 0: any)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics (default: 127.0.0.1)")


def _release_options(parser: argparse.ArgumentParser, several: bool) -> None:
    if several:
        parser.add_argument("--uvicorn", nargs="+", required=True, help="uvicorn versions ('latest', or a wheel/dir)")
        parser.add_argument("--ws", nargs="+", default=["wsproto", "websockets"], help="ws implementations")
    else:
        parser.add_argument("--uvicorn", default=None, help="uvicorn version, 'latest', or a wheel/source dir")
        parser.add_argument("--ws", default="wsproto", help="ws implementation (default: wsproto)")
        parser.add_argument("--target-python", default=None, help="use this interpreter's environment as it is")
        parser.add_argument("--release", default=None, help="release name for labels and reports")
    parser.add_argument("--duration", default="60s", help="run time of each soak (default: 60s)")
    parser.add_argument("--users", type=int, default=100, help="Locust users (default: 100)")
    parser.add_argument("--spawn-rate", type=float, default=50.0, help="users started per second (default: 50)")
    parser.add_argument("--app", default=None, help="your ASGI app (module:attr); the probe route is mounted beside it")
    parser.add_argument("--report-dir", default=None, help="where reports go (default: reports/...)")
    parser.add_argument("--metrics-port", type=int, default=9646, help="port of /metrics (default: 9646)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics (default: 127.0.0.1)")
    parser.add_argument("--gunicorn", default=None, help="pin gunicorn instead of the release's contemporary")
    parser.add_argument("--ws-version", default=None, help="pin the ws library (websockets or wsproto)")
    parser.add_argument("--constraint", default=None, help="pip constraints file for the environment")
    parser.add_argument("--as-of", default=None, help="resolve dependencies as of this date instead")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default: 2)")
    parser.add_argument("--hold-seconds", type=float, default=2.0, help="pending time of each handshake (default: 2)")
    parser.add_argument(
        "--keep-open-seconds", type=float, default=1.0, help="accepted websockets stay open (default: 1)"
    )
    parser.add_argument("--term-interval", type=float, default=3.0, help="seconds between TERMs (default: 3)")
    parser.add_argument("--term-jitter", type=float, default=1.0, help="random extra seconds (default: 1)")
    parser.add_argument("--allow", default="", help="tolerated errors: SIGNATURE=N[,SIGNATURE=N]")
    parser.add_argument(
        "--http-rejection-is-error", action="store_true", help="HTTP rejections of caught handshakes fail"
    )
    parser.add_argument("--cache-dir", default=None, help="where release environments are kept")


def _soak_config(args: argparse.Namespace, uvicorn: str | None, ws: str, report_dir: Path) -> SoakConfig:
    return SoakConfig(
        uvicorn=uvicorn,
        ws=ws,
        duration=parse_duration(args.duration),
        users=args.users,
        spawn_rate=args.spawn_rate,
        report_dir=report_dir,
        release=getattr(args, "release", None),
        app=args.app,
        target_python=getattr(args, "target_python", None),
        gunicorn=args.gunicorn,
        ws_version=args.ws_version,
        constraint=args.constraint,
        as_of=args.as_of,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        workers=args.workers,
        hold_seconds=args.hold_seconds,
        keep_open_seconds=args.keep_open_seconds,
        term_interval=args.term_interval,
        term_jitter=args.term_jitter,
        allow=args.allow,
        http_rejection_is_error=args.http_rejection_is_error,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )


def run_soak_command(args: argparse.Namespace) -> int:
    name = args.release or args.uvicorn or "current"
    report_dir = Path(args.report_dir or f"reports/soak-{Path(name).name}-{args.ws}")
    summary = run_soak(_soak_config(args, args.uvicorn, args.ws, report_dir))
    return soak_exit_code(summary)


def run_matrix_command(args: argparse.Namespace) -> int:
    report_dir = Path(args.report_dir or "reports/matrix")
    template = _soak_config(args, None, args.ws[0], report_dir)
    config = MatrixConfig(
        releases=tuple(args.uvicorn),
        ws=tuple(args.ws),
        soak=template,
        report_dir=report_dir,
        expect_fail=tuple(args.expect_fail or ()),
        baseline_release=args.baseline_release,
    )
    result = run_matrix(config)
    print(terminal(result))
    print(f"report: {report_dir}/matrix.md, matrix.json, matrix.html")
    return int(result["exit_code"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handshake-chaos", description=__doc__)
    parser.add_argument("--version", action="version", version=f"handshake-chaos {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _controller_parser(subparsers)
    soak = subparsers.add_parser("soak", help="pre-release soak test of one release; exits with the gate's code")
    _release_options(soak, several=False)
    matrix = subparsers.add_parser("matrix", help="soaks over several releases and ws implementations, side by side")
    _release_options(matrix, several=True)
    matrix.add_argument("--expect-fail", nargs="*", help="cells expected to fail: RELEASE or RELEASE:WS")
    matrix.add_argument("--baseline-release", default=None, help="fail other releases only on signatures it lacks")
    return parser


def run_controller(args: argparse.Namespace) -> int:
    duration = parse_duration(args.duration) if args.duration is not None else None
    pid = args.pid if args.pid is not None else read_pidfile(args.pidfile)
    master = GunicornMaster(pid)
    listening = master.listen_address()
    host = f"ws://{listening[0]}:{listening[1]}" if listening else "ws://127.0.0.1:0"
    options = ChaosOptions(
        term_interval=args.interval,
        term_jitter=args.jitter,
        min_alive=args.min_alive,
        dry_run=args.dry_run,
        max_signals=args.max_signals,
        signal_name=args.signal,
        target_pid=pid,
        server_log=args.server_log,
        release=args.release,
        ws=args.ws,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
    )
    options.controller_config().validate(len(master.workers()))
    session = ChaosSession(options, host)
    stop = _Deadline(duration)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop.set)
    session.start()
    try:
        session.start_controller()
        while not stop.wait(0.2) and not session.controller_finished():
            pass
    finally:
        session.close()
    summary = session.summary()
    if args.json:
        print(json.dumps(summary["signals"]["records"], indent=2))
    print(
        f"signals sent: {summary['signals']['sent']}, would-send (dry-run): {summary['signals']['dry_run']}, "
        f"server-side errors: {sum(row['count'] for row in summary['errors'])}",
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
        if args.command == "soak":
            return run_soak_command(args)
        if args.command == "matrix":
            return run_matrix_command(args)
    except ChaosError as exc:
        print(f"handshake-chaos: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Before a run started (a run stops gracefully and reports on its own).
        print("handshake-chaos: interrupted", file=sys.stderr)
        return 130
    return 2
