"""``handshake-chaos``: the command-line edge. Builds the options, validates everything, then acts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import configargparse

from chaos import __version__
from chaos.commands import bisect, health
from chaos.commands.matrix import MatrixConfig, MatrixSettings, run_matrix
from chaos.commands.soak import SoakConfig, SoakSettings, locustfile, run_soak, soak_exit_code
from chaos.commands.stopping import Interrupted, StopFlag
from chaos.deployment.processes import ServerMaster
from chaos.detect.client import ClientRecorder
from chaos.errors import ChaosError, UsageError
from chaos.linux import require_linux
from chaos.optionmodel import add_to_parser, build, option
from chaos.report.dashboard import write_shipped
from chaos.report.matrix_tables import terminal
from chaos.results import ExitCode
from chaos.run.exposure import LocalExposure
from chaos.run.options import ChaosOptions
from chaos.run.session import ChaosSession

log = logging.getLogger("handshake-chaos")


class _Parser(configargparse.ArgumentParser):  # type: ignore[misc]  # configargparse is untyped
    """Bad usage is one line and exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


_CONTROLLER = frozenset({"controller"})


@dataclass(frozen=True)
class ControllerSettings:
    duration: float | None = option(
        None, "--duration", "stop after this long (e.g. 45s, 10m)", duration=True, entry_points=_CONTROLLER
    )
    json: bool = option(False, "--json", "print the signal records as JSON at the end", entry_points=_CONTROLLER)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="handshake-chaos", description=__doc__)
    parser.add_argument("--version", action="version", version=f"handshake-chaos {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    controller = subparsers.add_parser("controller", help="roll TERM through the workers of a running gunicorn master")
    add_to_parser(controller, ChaosOptions, "controller")
    add_to_parser(controller, ControllerSettings, "controller")
    soak = subparsers.add_parser("soak", help="pre-release soak test of one release; exits with the gate's code")
    add_to_parser(soak, SoakSettings, "soak")
    add_to_parser(soak, ChaosOptions, "soak")
    matrix = subparsers.add_parser("matrix", help="soaks over several releases and ws implementations, side by side")
    add_to_parser(matrix, MatrixSettings, "matrix")
    add_to_parser(matrix, SoakSettings, "matrix")
    add_to_parser(matrix, ChaosOptions, "matrix")
    dashboards = subparsers.add_parser(
        "dashboards", help="write the Grafana dashboard, provisioning, Prometheus config and alert rules to DIR"
    )
    dashboards.add_argument("directory", metavar="DIR", help="where to write them (created if missing)")
    dashboards.add_argument("--force", action="store_true", help="replace files that differ")
    bisect.add_parser(subparsers)
    health.add_parser(subparsers)
    subparsers.add_parser(
        "locust", help="Locust with the packaged locustfile: handshake-chaos locust [Locust's options and ours]"
    )
    return parser


def run_soak_command(values: dict[str, Any]) -> int:
    settings = build(SoakSettings, values, "soak")
    options = build(ChaosOptions, values, "soak")
    name = options.release or (Path(settings.uvicorn).name if settings.uvicorn else "current")
    report_dir = Path(settings.report_dir or f"reports/soak-{name}-{options.ws}")
    return soak_exit_code(run_soak(SoakConfig(settings, options, report_dir), stop=StopFlag().install()))


def run_matrix_command(values: dict[str, Any]) -> int:
    matrix = build(MatrixSettings, values, "matrix")
    settings = build(SoakSettings, values, "matrix")
    report_dir = Path(settings.report_dir or "reports/matrix")
    template = SoakConfig(settings, build(ChaosOptions, values, "matrix"), report_dir)
    result = run_matrix(MatrixConfig(matrix, template, report_dir), stop=StopFlag().install())
    print(terminal(result))
    print(f"report: {report_dir}/matrix.md, matrix.json, matrix.html")
    return result.exit_code


def run_dashboards(values: dict[str, Any]) -> int:
    written = write_shipped(Path(values["directory"]), overwrite=values["force"])
    for path in written:
        print(path)
    return ExitCode.PASS


def run_locust(arguments: Sequence[str]) -> NoReturn:
    """``handshake-chaos locust ...``: Locust with the packaged locustfile; every argument is Locust's."""
    command = [sys.executable, "-m", "locust", "-f", str(locustfile()), *arguments]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def run_controller(values: dict[str, Any]) -> int:
    settings = build(ControllerSettings, values, "controller")
    options = build(ChaosOptions, values, "controller")
    master = ServerMaster(options.master_pid())
    listening = master.listen_address()
    host = f"ws://{listening[0]}:{listening[1]}" if listening else "ws://127.0.0.1:0"
    options.check_workers(len(master.workers()))
    session = ChaosSession(options, host, exposure=LocalExposure(ClientRecorder(options.wire_judgement())))
    stop = StopFlag(settings.duration).install()
    session.start()
    try:
        session.start_controller()
        while not stop.wait(0.2) and not session.controller_finished():
            pass
    finally:
        session.close()
    summary = session.summary(stop.signum)
    session.write_report(summary)
    if settings.json:
        print(json.dumps([record.to_json() for record in summary.signals.records], indent=2))
    print(
        f"signals sent: {summary.signals.sent}, would-send (dry-run): {summary.signals.dry_run}, "
        f"server-side errors: {sum(row.count for row in summary.errors)}",
        file=sys.stderr,
    )
    return ExitCode.PASS if stop.signum is None else ExitCode.of_signal(stop.signum)


_COMMANDS = {
    "controller": run_controller,
    "soak": run_soak_command,
    "matrix": run_matrix_command,
    "dashboards": run_dashboards,
    "bisect": bisect.run_bisect_command,
    "health": health.run_health_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["locust"]:
        run_locust(arguments[1:])  # the plugin says it, where Locust runs  # Locust parses the rest, --help included
    try:
        require_linux()
        args = build_parser().parse_args(arguments)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return int(_COMMANDS[args.command](vars(args)))
    except (ChaosError, Interrupted) as exc:
        print(f"handshake-chaos: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        # Before a run started (a run stops gracefully and reports on its own).
        print("handshake-chaos: interrupted", file=sys.stderr)
        return int(ExitCode.SIGINT)
