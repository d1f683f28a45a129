"""Finding a server's master and its workers, and verifying them before every signal.

A master is gunicorn's arbiter or uvicorn's own supervisor (``uvicorn --workers N``).

Everything here works on pids that were *found* through the master (its direct
children), never on pids matched by name; a process is identified by (pid, create
time) so a recycled pid is never mistaken for the worker it replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

from chaos.deployment.families import MASTER_PROGRAMS
from chaos.errors import UsageError

_PR_SET_PDEATHSIG = 1
# gunicorn creates each worker's heartbeat file under this prefix and unlinks it at once;
# the worker keeps it open, and it is reachable through /proc/PID/fd.
_HEARTBEAT_PREFIX = "wgunicorn-"
# Creation and unlink of the heartbeat file happen within microseconds; a gap larger
# than this between its ctime and mtime means the worker has touched it since.
_HEARTBEAT_TICK_SECONDS = 0.05


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as (pid, create time): stable against pid reuse."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, process: psutil.Process) -> ProcessIdentity:
        return cls(process.pid, process.create_time())


def die_with_parent() -> None:
    """In a child before exec: if the process that started it dies without cleaning up (SIGKILL),
    the kernel sends the child TERM, so nothing the tool started outlives it for long."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def read_pidfile(path: str | os.PathLike[str]) -> int:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read pidfile {path}: {exc.strerror}") from None
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"pidfile {path} does not hold a pid (found {text[:40]!r})")
    return int(text)


# A master's children that are not workers: multiprocessing's helpers under uvicorn's supervisor.
_HELPER_MARKERS = ("resource_tracker", "semaphore_tracker", "forkserver")


class ServerMaster:
    """A verified, live server master (gunicorn's arbiter, or uvicorn's supervisor) and a view of its workers.

    ``ready_dir`` is where the workers of a deployment the tool started say they are ready
    (``handshake_chaos_ready``); without one, readiness is read from gunicorn's heartbeat files.
    """

    def __init__(self, pid: int, ready_dir: Path | None = None) -> None:
        try:
            process = psutil.Process(pid)
            cmdline = " ".join(process.cmdline())
            name = process.name()
        except psutil.NoSuchProcess:
            raise UsageError(f"no process with pid {pid}") from None
        except psutil.AccessDenied:
            raise UsageError(f"not allowed to inspect pid {pid}") from None
        if not any(marker in cmdline or marker in name for marker in MASTER_PROGRAMS):
            raise UsageError(f"pid {pid} is not a gunicorn or uvicorn master (command: {cmdline[:80]!r})")
        self._process = process
        self.identity = ProcessIdentity.of(process)
        self.ready_dir = ready_dir

    @property
    def pid(self) -> int:
        return self.identity.pid

    def is_alive(self) -> bool:
        # psutil's is_running compares the create time too: a reused pid is not "running".
        return self._process.is_running() and self._process.status() != psutil.STATUS_ZOMBIE

    def workers(self) -> list[psutil.Process]:
        """Live workers, oldest first."""
        if not self.is_alive():
            return []
        alive = []
        for child in self._process.children(recursive=False):
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                if any(marker in " ".join(child.cmdline()) for marker in _HELPER_MARKERS):
                    continue
                alive.append((child.create_time(), child.pid, child))
            except psutil.Error:
                continue
        return [child for _, _, child in sorted(alive, key=lambda item: item[:2])]

    def verify_worker(self, worker: psutil.Process) -> bool:
        """True only if ``worker`` is, right now, the same live process and a child of this master."""
        try:
            return (
                self.is_alive()
                and worker.is_running()
                and worker.ppid() == self.pid
                and worker.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def ready(self, pid: int) -> bool | None:
        """Whether worker ``pid`` is ready to serve: its own ready file, else its first heartbeat.
        None when neither can be seen (an external deployment's worker without a heartbeat file)."""
        if self.ready_dir is not None:
            if (self.ready_dir / f"ready-{pid}").exists():
                return True
            ticked = heartbeat_ticked(pid)
            return bool(ticked)  # the tool's own deployment always says one way or the other
        return heartbeat_ticked(pid)

    def process(self) -> psutil.Process:
        return self._process

    def listen_address(self) -> tuple[str, int] | None:
        """Where the master listens (its inherited socket), if it can be seen."""
        try:
            connections = self._process.net_connections(kind="tcp")
        except psutil.Error:
            return None
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN and conn.laddr:
                return conn.laddr.ip, conn.laddr.port
        return None


def heartbeat_ticked(pid: int) -> bool | None:
    """Whether a gunicorn worker has touched its heartbeat file since it was forked.

    uvicorn's worker first notifies gunicorn on the first tick of its main loop, i.e.
    after lifespan startup and once it serves on the listening socket: the moment the
    replacement is ready. None when the file cannot be found (not a gunicorn worker,
    or no permission to look).
    """
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            if _HEARTBEAT_PREFIX not in os.readlink(entry):
                continue
            stat = os.stat(entry)
        except OSError:
            continue
        # Older gunicorn notifies with fchmod (ctime moves, mtime stays); newer with
        # utime(monotonic) (mtime jumps to a small monotonic value). Either way the two
        # stop agreeing.
        return abs(stat.st_ctime - stat.st_mtime) > _HEARTBEAT_TICK_SECONDS
    return None
