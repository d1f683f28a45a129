"""How many handshakes one gevent process (like one Locust process) holds pending, and at what cost.

    .venv/bin/python benchmarks/held_handshakes.py [COUNT]   (default 5000)

Starts an embedded deployment whose probe holds each handshake 60 s, opens COUNT
handshakes from greenlets, waits until all are in flight, and prints file descriptors
and memory per held handshake for this process. The target is one descriptor each
(``websockets.sync`` spends three: a socket, a socketpair end and a selector).
``hold_handshakes`` is shared with the other benchmarks that need many handshakes held.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402

from chaos.deployment.launcher import Deployment, DeploymentConfig  # noqa: E402
from chaos.load.client import hold_handshake  # noqa: E402
from chaos.load.ledger import HandshakeLedger  # noqa: E402

HOLD_SECONDS = 60  # the probe's longest hold (HOLD_MAX_SECONDS)


@dataclass
class Held:
    """Handshakes held pending against a deployment, from greenlets of this process."""

    ledger: HandshakeLedger
    greenlets: list[gevent.Greenlet]
    started: float  # monotonic: the first handshake was opened then and is answered HOLD_SECONDS later
    ramp_seconds: float

    def release(self) -> None:
        gevent.killall(self.greenlets, block=False)


def raise_fd_limit() -> int:
    """The soft limit on descriptors raised to the hard one (each held handshake costs one); returns it.
    A deployment started afterwards inherits it: each worker holds one descriptor per connection it serves."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def hold_handshakes(target: Deployment, count: int, ramp_timeout: float = 60.0) -> Held:
    """Opens ``count`` handshakes the probe holds HOLD_SECONDS, and waits (up to ``ramp_timeout``) until all
    are in flight."""
    ledger = HandshakeLedger()
    url = f"{target.url}/ws/probe?hold={HOLD_SECONDS}&keep=1"
    started = time.monotonic()
    greenlets = [
        gevent.spawn(hold_handshake, url, handshake_timeout=HOLD_SECONDS + 30, keep_open=0, ledger=ledger)
        for _ in range(count)
    ]
    deadline = time.monotonic() + ramp_timeout
    while len(ledger) < count and time.monotonic() < deadline:
        gevent.sleep(0.1)
    return Held(ledger, greenlets, started, time.monotonic() - started)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    hard = raise_fd_limit()
    me = psutil.Process()
    with Deployment(DeploymentConfig(workers=2, graceful_timeout=1)) as target:
        fds_before, rss_before = me.num_fds(), me.memory_info().rss
        held = hold_handshakes(target, count)
        in_flight = len(held.ledger)
        fds = me.num_fds() - fds_before
        rss = me.memory_info().rss - rss_before
        assert target.master is not None
        server_fds: int = sum(w.num_fds() for w in target.master.workers())
        print(f"held pending handshakes:        {in_flight} of {count} (ramp {held.ramp_seconds:.1f}s)")
        print(f"client fds per held handshake:  {fds / max(in_flight, 1):.2f}")
        print(f"client memory per handshake:    {rss / max(in_flight, 1) / 1024:.1f} KiB (rss +{rss / 2**20:.0f} MiB)")
        print(f"server fds (2 workers):         {server_fds}")
        print(f"one-process ceiling at {hard} fds: ~{int(hard / max(fds / max(in_flight, 1), 1e-9))} held handshakes")
        held.release()
    os._exit(0)


if __name__ == "__main__":
    main()
