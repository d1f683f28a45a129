"""How long the exposure snapshot of one worker takes with many handshakes held: psutil's path and sock_diag's.

    .venv/bin/python benchmarks/exposure_snapshot.py [--held N] [--rounds R]   (default 15000, 30)

Holds N handshakes against an embedded 2-worker deployment from this one gevent process (the pieces of
benchmarks/held_handshakes.py), then takes R snapshots of the busier worker each way, alternating, while
every handshake is still held (the probe answers each 60 s after it was opened; the rounds stop short of
that). Each pair must be the same set. The sock_diag snapshot's first round reads every descriptor of the
worker (a cold fd map, as for a worker seen for the first time); it is reported apart from the rest.

Descriptors: this process holds one per handshake and each worker one per connection it serves, each
under its own RLIMIT_NOFILE (raised to the hard limit, which the deployment inherits): N = 15,000 needs
some 15,000 here and 7,500 in each worker.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from held_handshakes import HOLD_SECONDS, hold_handshakes, raise_fd_limit  # noqa: E402

from chaos.deployment.launcher import Deployment, DeploymentConfig  # noqa: E402
from chaos.deployment.sockets import SocketSnapshots, psutil_worker_peers  # noqa: E402
from chaos.results import Address  # noqa: E402

# Rounds end this long before the first handshake is answered, so that every pair sees the same set.
_MARGIN_SECONDS = 5.0
_ACCEPT_TIMEOUT_SECONDS = 30.0


def timed(snapshot: Callable[[], frozenset[Address]]) -> tuple[float, frozenset[Address]]:
    started = time.perf_counter()
    peers = snapshot()
    return (time.perf_counter() - started) * 1000, peers


def figures(label: str, millis: list[float]) -> str:
    if not millis:
        return f"{label}: no rounds"
    return f"{label}: median {statistics.median(millis):6.1f} ms, max {max(millis):6.1f} ms ({len(millis)} rounds)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=15000, help="handshakes to hold (default 15000)")
    parser.add_argument("--rounds", type=int, default=30, help="snapshots each way (default 30)")
    args = parser.parse_args()
    limit = raise_fd_limit()
    if args.held + 1000 > limit:
        print(f"--held {args.held} needs more descriptors than RLIMIT_NOFILE allows ({limit})", file=sys.stderr)
        return 2
    with Deployment(DeploymentConfig(workers=2, graceful_timeout=1)) as target:
        assert target.master is not None
        workers = target.master.workers()
        baseline = sum(worker.num_fds() for worker in workers)
        held = hold_handshakes(target, args.held)
        rounds_end = held.started + HOLD_SECONDS - _MARGIN_SECONDS
        in_flight = len(held.ledger)
        # In flight for the client is not yet accepted by a worker: wait until the workers hold them all.
        deadline = time.monotonic() + _ACCEPT_TIMEOUT_SECONDS
        while sum(worker.num_fds() for worker in workers) - baseline < in_flight and time.monotonic() < deadline:
            time.sleep(0.2)
        # The busier worker: the one a signal would expose most.
        pid, port = max(workers, key=lambda worker: worker.num_fds()).pid, target.port
        # First, before psutil has looked up any of the worker's /proc/PID/fd entries (the kernel caches them).
        snapshots = SocketSnapshots()
        cold_ms, cold = timed(lambda: snapshots.worker_peers(pid, port))
        cold_readlinks = snapshots.last_readlinks
        print(f"held pending handshakes:  {in_flight} of {args.held} (ramp {held.ramp_seconds:.1f}s)")
        print(f"connections per worker:   {[len(psutil_worker_peers(w.pid, port)) for w in workers]}")
        old_ms: list[float] = []
        new_ms: list[float] = []
        mismatches = 0
        connections = len(cold)
        for _ in range(args.rounds):
            if time.monotonic() >= rounds_end:
                print("the probe's hold is ending: fewer rounds than asked", file=sys.stderr)
                break
            millis, old = timed(lambda: psutil_worker_peers(pid, port))
            old_ms.append(millis)
            millis, new = timed(lambda: snapshots.worker_peers(pid, port))
            new_ms.append(millis)
            mismatches += old != new
            connections = len(new)
        still_held = len(held.ledger)
        held.release()
    print(f"snapshot path:            {'sock_diag' if snapshots.uses_netlink else 'psutil (netlink unavailable)'}")
    print(f"connections on worker:    {connections} (pid {pid}, port {port})")
    print(figures("old (psutil)            ", old_ms))
    print(figures("new (sock_diag, fd map) ", new_ms))
    print(f"new, first (cold map):    {cold_ms:6.1f} ms ({cold_readlinks} descriptors read)")
    print(f"new, later rounds read:   {snapshots.last_readlinks} descriptors (the last round)")
    print(f"pairs that differ:        {mismatches} of {len(new_ms)} (handshakes still held: {still_held})")
    sys.stdout.flush()
    # As held_handshakes: greenlets killed mid-handshake need no orderly interpreter exit.
    os._exit(1 if mismatches or not new_ms else 0)


if __name__ == "__main__":
    sys.exit(main())
