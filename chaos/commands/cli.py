"""``handshake-chaos``: the command-line edge. Builds the options, validates everything, then acts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import configargparse

from chaos import __version__
from chaos.commands import bisect, health
from chaos.commands.matrix import MatrixConfig, MatrixSettings, run_matrix
from chaos.commands.outputs import CiSettings, Outcome, finish_matrix, finish_soak, run_with_outputs
from chaos.commands.soak import SoakConfig, SoakSettings, locustfile, run_soak, soak_exit_code, usable_directory
from chaos.commands.stopping import Interrupted, StopFlag
from chaos.deployment.processes import ServerMaster
from chaos.detect.client import ClientRecorder
from chaos.errors import ChaosError, UsageError
from chaos.linux import require_linux
from chaos.optionmodel import add_to_parser, build, option
from chaos.report.dashboard import DEFAULT_GRAFANA_URL, write_shipped
from chaos.report.matrix_tables import terminal
from chaos.report.text import format_summary
from chaos.results import ExitCode
from chaos.run.exposure import LocalExposure
from chaos.run.feed import Feed, check_exposure
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
        None,
        "--duration",
        "stop after this long (e.g. 45s, 10m)",
        duration=True,
        entry_points=_CONTROLLER,
        group="signals",
    )
    json: bool = option(
        False, "--json", "print the signal records as JSON at the end", entry_points=_CONTROLLER, group="output"
    )


_EXAMPLES = {
    "soak": """examples:
  handshake-chaos soak --uvicorn 0.19.0 --ws wsproto --duration 45s          # finds uvicorn #596: exit 1
  handshake-chaos soak --uvicorn 0.20.0 --ws wsproto --until-verdict --junit-xml junit.xml --json
  handshake-chaos soak --uvicorn latest --with starlette --app-dir . --app svc:app --ws-path /ws

exit codes: 0 pass, 1 handshake-time shutdown errors, 2 bad usage, 3 inconclusive (no signal caught a
pending handshake), 4 the release or deployment could not be built or started, 130/143 interrupted.
Every option is also read from HANDSHAKE_CHAOS_<FLAG> (--term-interval: HANDSHAKE_CHAOS_TERM_INTERVAL).""",
    "matrix": """examples:
  handshake-chaos matrix --uvicorn 0.19.0 0.20.0 --ws wsproto websockets --duration 30s
  handshake-chaos matrix --uvicorn 0.54.0 0.55.0rc1 --baseline-release 0.54.0 --junit-xml junit.xml

A cell is one soak; the exit code is the worst cell's (a cell --expect-fail names, or that shows only
the baseline's signatures, does not fail the matrix).""",
    "controller": """examples:
  handshake-chaos controller --pidfile /run/gunicorn.pid --interval 5 --duration 10m --server-log error.log
  handshake-chaos controller --pid 12345 --dry-run --max-signals 3 --json""",
    "dashboards": """examples:
  handshake-chaos dashboards ./grafana
  handshake-chaos dashboards ./grafana --grafana-url https://grafana.example.com \\
      --runbook-url https://github.com/OWNER/REPO/blob/main/grafana/runbook.md""",
}


def _verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    """-v/-q, before the subcommand or after it (a subcommand's own copy keeps the top one's value unless given)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug detail")
    group.add_argument("-q", "--quiet", action="store_true", default=default, help="only warnings and the result")


def _command(subparsers: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        usage=f"handshake-chaos {name} [options]" + (" DIR" if name == "dashboards" else ""),
        description=textwrap.fill(description, 100),
        epilog=_EXAMPLES.get(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _verbosity(command, argparse.SUPPRESS)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="handshake-chaos", description=__doc__)
    parser.add_argument("--version", action="version", version=f"handshake-chaos {__version__}")
    _verbosity(parser, False)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    controller = _command(
        subparsers,
        "controller",
        "roll TERM through the workers of a running gunicorn master",
        "The controller alone, for a deployment already running on this host (its master by --pid or "
        "--pidfile): it signals only verified workers of that master and serves its own /metrics.",
    )
    add_to_parser(controller, ChaosOptions, "controller")
    add_to_parser(controller, ControllerSettings, "controller")
    soak = _command(
        subparsers,
        "soak",
        "pre-release soak test of one release; exits with the gate's code",
        "Builds (or reuses) the release's environment, starts a gunicorn+uvicorn deployment of it, holds "
        "websocket handshakes pending while signals roll through its workers for --duration, writes a "
        "report directory (summary.json, report.md, report.html) and exits with the gate's code.",
    )
    add_to_parser(soak, SoakSettings, "soak")
    add_to_parser(soak, ChaosOptions, "soak")
    add_to_parser(soak, CiSettings, "soak")
    matrix = _command(
        subparsers,
        "matrix",
        "soaks over several releases and ws implementations, side by side",
        "One soak per release x ws implementation x mode (x server, x scenario), each stopped as soon as its "
        "verdict settles; writes matrix.md, matrix.json, matrix.html and matrix.txt.",
    )
    add_to_parser(matrix, MatrixSettings, "matrix")
    add_to_parser(matrix, SoakSettings, "matrix")
    add_to_parser(matrix, ChaosOptions, "matrix")
    add_to_parser(matrix, CiSettings, "matrix")
    dashboards = _command(
        subparsers,
        "dashboards",
        "write the Grafana dashboard, provisioning, Prometheus config and alert rules to DIR",
        "Writes what the package ships for Grafana and Prometheus, and the alerts' runbook. The alert rules' "
        "runbook_url and dashboard_url are written absolute (Alertmanager cannot open a relative link).",
    )
    dashboards.add_argument("directory", metavar="DIR", help="where to write them (created if missing)")
    dashboards.add_argument("--force", action="store_true", help="replace files that differ")
    dashboards.add_argument(
        "--runbook-url",
        metavar="BASE",
        env_var="HANDSHAKE_CHAOS_RUNBOOK_URL",
        help="where the runbook is published (e.g. its copy in your repository); alerts link BASE#SECTION "
        "(default: file://DIR/runbook.md, the copy written beside the rules)",
    )
    dashboards.add_argument(
        "--grafana-url",
        metavar="BASE",
        env_var="HANDSHAKE_CHAOS_GRAFANA_URL",
        help=f"the Grafana the dashboard is provisioned in; alerts link BASE/d/handshake-chaos/... "
        f"(default: {DEFAULT_GRAFANA_URL}, the Grafana of the shipped docker-compose.yml)",
    )
    bisect.add_parser(subparsers)
    health.add_parser(subparsers)
    subparsers.add_parser(
        "locust",
        help="Locust with the packaged locustfile: handshake-chaos locust [Locust's options and ours] "
        "(handshake-chaos locust --help lists both)",
    )
    return parser


def _quiet(values: dict[str, Any]) -> bool:
    return bool(values.get("quiet"))


def run_soak_command(values: dict[str, Any]) -> int:
    ci = build(CiSettings, values, "soak")

    def run() -> Outcome:
        settings = build(SoakSettings, values, "soak")
        options = build(ChaosOptions, values, "soak")
        if ci.junit_xml:
            usable_directory(Path(ci.junit_xml).parent, "--junit-xml")
        name = options.release or (Path(settings.uvicorn).name if settings.uvicorn else "current")
        report_dir = Path(settings.report_dir or f"reports/soak-{name}-{options.ws}")
        quiet = _quiet(values)
        summary = run_soak(SoakConfig(settings, options, report_dir), quiet=quiet, stop=StopFlag().install())
        if quiet:
            print(format_summary(summary), flush=True)
        soak_exit_code(summary)
        return finish_soak(summary, report_dir, ci, options.gate_policy().allow)

    return run_with_outputs("soak", ci, run)


def run_matrix_command(values: dict[str, Any]) -> int:
    ci = build(CiSettings, values, "matrix")

    def run() -> Outcome:
        matrix = build(MatrixSettings, values, "matrix")
        settings = build(SoakSettings, values, "matrix")
        if ci.junit_xml:
            usable_directory(Path(ci.junit_xml).parent, "--junit-xml")
        report_dir = Path(settings.report_dir or "reports/matrix")
        template = SoakConfig(settings, build(ChaosOptions, values, "matrix"), report_dir)
        result = run_matrix(MatrixConfig(matrix, template, report_dir), stop=StopFlag().install())
        print(terminal(result))
        print(f"report: {report_dir}/matrix.md, matrix.json, matrix.html")
        return finish_matrix(result, report_dir, ci)

    return run_with_outputs("matrix", ci, run)


def run_dashboards(values: dict[str, Any]) -> int:
    written = write_shipped(
        Path(values["directory"]),
        overwrite=values["force"],
        runbook_url=values.get("runbook_url"),
        grafana_url=values.get("grafana_url"),
    )
    for path in written:
        print(path)
    return ExitCode.PASS


def run_locust(arguments: Sequence[str]) -> NoReturn:
    """``handshake-chaos locust ...``: Locust with the packaged locustfile; every argument is Locust's, and
    ``--help`` lists the plugin's options too (``chaos.locust_plugin.main``)."""
    command = [sys.executable, "-m", "chaos.locust_plugin.main", "-f", str(locustfile()), *arguments]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def run_controller(values: dict[str, Any]) -> int:
    settings = build(ControllerSettings, values, "controller")
    options = build(ChaosOptions, values, "controller")
    master = ServerMaster(options.master_pid())
    listening = master.listen_address()
    host = f"ws://{listening[0]}:{listening[1]}" if listening else "ws://127.0.0.1:0"
    options.check_workers(len(master.workers()))
    check_exposure(options.metrics_host, options.token)
    exposure = LocalExposure(ClientRecorder(options.wire_judgement()))
    session = ChaosSession(options, host, exposure=exposure, feed=Feed())
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
            level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
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
