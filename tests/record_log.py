"""Records the gunicorn error log of one worker TERMed while it holds pending handshakes.

    python -m tests.record_log OUT.log --uvicorn 0.52.0 --ws wsproto [--handshakes 10] [--hold 2]
        [--scenario deny-stream] [--with python-json-logger --log-config-json tests/data/log-configs/json.json]

How every ``tests/data/*.log`` is made (its README lists them): the release's environment is
built as ``soak`` builds it (dependencies as of its publication; cached), a gunicorn master with
two uvicorn workers serves the probe app, ``--handshakes`` clients hold handshakes pending on it
(the probe keeps each ``--hold`` seconds before it accepts), the oldest worker is sent TERM once
they are all pending, and once its replacement serves the error log is copied to OUT.log.
``--scenario`` holds them in another state of the handshake (``chaos.scenarios``; default hold-accept).
With ``--log-config-json`` the deployment logs through that logging config (gunicorn's own
flag; its handler's ``ERROR_LOG`` file name is replaced by the run's error log), as production
deployments that log JSON or drop gunicorn's ``[pid]`` do; ``--with`` installs what it needs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from chaos.deployment.environments import ReleaseSpec, build_environment
from chaos.deployment.launcher import Deployment, DeploymentConfig
from chaos.deployment.sockets import worker_peers
from chaos.load.client import LoadProfile, handshake_url, hold_handshake
from chaos.load.ledger import HandshakeLedger
from chaos.results import SCENARIOS, SERVER_FAMILIES, ServerFamily
from chaos.run.controller import ControllerConfig, RollingSignalController


def record(
    out: Path,
    uvicorn: str,
    ws: str,
    handshakes: int,
    hold: float,
    cache: Path | None,
    with_packages: tuple[str, ...] = (),
    log_config: Path | None = None,
    server: ServerFamily = "gunicorn-uvicorn",
    graceful_timeout: int = 5,
    scenario: str = "hold-accept",
) -> None:
    library = "wsproto" if ws == "wsproto" else "websockets"
    spec = ReleaseSpec(uvicorn=uvicorn, ws_library=library, with_packages=with_packages)
    environment = build_environment(spec, cache)
    with tempfile.TemporaryDirectory(prefix="record-log-") as scratch:
        run_dir = Path(scratch)
        error_log = run_dir / "gunicorn-error.log"
        log_config_json = None
        if log_config is not None:
            configured = run_dir / "log-config.json"
            configured.write_text(log_config.read_text().replace("ERROR_LOG", str(error_log)))
            log_config_json = str(configured)
        config = DeploymentConfig(
            python=environment.python,
            ws=ws,
            workers=2,
            graceful_timeout=graceful_timeout,
            run_dir=run_dir,
            log_config_json=log_config_json,
            server=server,
        )
        with Deployment(config) as target:
            ledger = HandshakeLedger()
            profile = LoadProfile(keep_open_seconds=0.5, scenarios=(scenario,))
            url = handshake_url(target.url, profile, hold, scenario)
            clients = [
                threading.Thread(
                    target=hold_handshake,
                    args=(url,),
                    kwargs={"ledger": ledger, "keep_open": 0.5, "scenario": scenario, "client_hold": hold},
                )
                for _ in range(handshakes)
            ]
            for client in clients:
                client.start()
            deadline = time.monotonic() + 10
            while len(ledger) < handshakes and time.monotonic() < deadline:
                time.sleep(0.02)
            assert target.master is not None
            oldest = target.master.workers()[0].pid
            held = ledger.mark(0, worker_peers(oldest, target.port), time.time(), commit=False).pending.total()
            controller = RollingSignalController(target.master, ControllerConfig(interval=0, jitter=0, max_signals=1))
            controller.run(threading.Event())
            for client in clients:
                client.join(timeout=hold + 30)
            time.sleep(0.5)  # the master's last lines about the exit
            shutil.copyfile(error_log, out)
    print(
        f"{out}: uvicorn {uvicorn} {ws} ({server}), worker {oldest} TERMed holding {held} of {handshakes} pending"
        f" handshakes ({scenario})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--uvicorn", required=True)
    parser.add_argument("--ws", default="wsproto")
    parser.add_argument("--handshakes", type=int, default=10)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--with", dest="with_packages", action="append", default=[])
    parser.add_argument("--log-config-json", type=Path)
    parser.add_argument("--server", default="gunicorn-uvicorn", choices=SERVER_FAMILIES)
    parser.add_argument("--graceful-timeout", type=int, default=5)
    parser.add_argument("--scenario", default="hold-accept", choices=SCENARIOS)
    args = parser.parse_args()
    record(
        args.out,
        args.uvicorn,
        args.ws,
        args.handshakes,
        args.hold,
        args.cache_dir,
        tuple(args.with_packages),
        args.log_config_json,
        args.server,
        args.graceful_timeout,
        args.scenario,
    )


if __name__ == "__main__":
    main()
