"""A real deployment (the launcher's) listening on a host's own address: run inside a namespace.

    ip netns exec NAME python -m tests.deployment_in_host --host ADDRESS [--workers N] [--run-dir DIR]

The launcher takes loopback addresses only (``DeploymentConfig.validate``: what the tool starts is not
to be reached from other machines). Inside a namespace made by tests/netns.py the host's veth address is
as private as loopback, so this checks everything else as the launcher does and lets that address
through. Prints one JSON line once every worker serves (``url``, ``port``, ``master``, ``workers``,
``run_dir``), then serves until SIGTERM or SIGINT, stops the deployment (every master and worker) and
exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from pathlib import Path

from chaos.deployment.launcher import Deployment, DeploymentConfig


class HostAddressConfig(DeploymentConfig):
    """The launcher's config, with any address of this (namespaced) host allowed as its host."""

    def validate(self) -> None:
        DeploymentConfig.validate(dataclasses.replace(self, host="127.0.0.1"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ws", default="auto")
    parser.add_argument("--graceful-timeout", type=int, default=2)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--python", default=sys.executable, help="the release environment's interpreter")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    config = HostAddressConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        ws=args.ws,
        graceful_timeout=args.graceful_timeout,
        run_dir=args.run_dir,
        python=args.python,
    )
    deployment = Deployment(config)
    try:
        deployment.start()
        master = deployment.master
        assert master is not None
        print(
            json.dumps(
                {
                    "url": deployment.url,
                    "port": deployment.port,
                    "master": master.pid,
                    "workers": [worker.pid for worker in master.workers()],
                    "run_dir": str(deployment.run_dir),
                    "error_log": str(deployment.error_log),
                }
            ),
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        deployment.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
