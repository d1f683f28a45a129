"""How many handshakes one gevent process (like one Locust process) holds pending, and at what cost.

    .venv/bin/python benchmarks/held_handshakes.py [COUNT]   (default 5000)

Starts an embedded deployment whose probe holds each handshake 60 s, opens COUNT
handshakes from greenlets, waits until all are in flight, and prints file descriptors
and memory per held handshake for this process. The target is one descriptor each
(``websockets.sync`` spends three: a socket, a socketpair end and a selector).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402

from chaos.deployment.launcher import Deployment, DeploymentConfig  # noqa: E402
from chaos.load.client import hold_handshake  # noqa: E402
from chaos.load.ledger import HandshakeLedger  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    me = psutil.Process()
    with Deployment(DeploymentConfig(workers=2, graceful_timeout=1)) as target:
        ledger = HandshakeLedger()
        url = f"{target.url}/ws/probe?hold=60&keep=1"
        fds_before, rss_before = me.num_fds(), me.memory_info().rss
        started = time.monotonic()
        greenlets = [
            gevent.spawn(hold_handshake, url, handshake_timeout=90, keep_open=0, ledger=ledger) for _ in range(count)
        ]
        deadline = time.monotonic() + 60
        while len(ledger) < count and time.monotonic() < deadline:
            gevent.sleep(0.1)
        ramp = time.monotonic() - started
        held = len(ledger)
        fds = me.num_fds() - fds_before
        rss = me.memory_info().rss - rss_before
        assert target.master is not None
        server_fds: int = sum(w.num_fds() for w in target.master.workers())
        print(f"held pending handshakes:        {held} of {count} (ramp {ramp:.1f}s)")
        print(f"client fds per held handshake:  {fds / max(held, 1):.2f}")
        print(f"client memory per handshake:    {rss / max(held, 1) / 1024:.1f} KiB (rss +{rss / 2**20:.0f} MiB)")
        print(f"server fds (2 workers):         {server_fds}")
        print(f"one-process ceiling at {hard} fds: ~{int(hard / max(fds / max(held, 1), 1e-9))} held handshakes")
        gevent.killall(greenlets, block=False)
    os._exit(0)


if __name__ == "__main__":
    main()
