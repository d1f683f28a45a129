"""The deployment launcher: server masters (a server family's) on one loopback listening socket.

The listening socket is created here, kept for the deployment's whole life, and handed to
each gunicorn master as ``fd://N``: the port is known before gunicorn starts, no other
process can take it in between, and while no master serves it (a whole-deployment restart)
clients wait in its backlog instead of being refused, as with systemd socket activation.
Several masters on the one socket are replicas behind a service (a rolling update).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from packaging.version import InvalidVersion, Version

from chaos.deployment.families import Launch, family
from chaos.deployment.processes import ServerMaster, die_with_parent
from chaos.errors import DeploymentError, UsageError
from chaos.results import DEFAULT_SERVER, WS_CHOICES, ServerFamily

log = logging.getLogger(__name__)

# Runs inside the deployment's own interpreter: put on its PYTHONPATH, never imported here.
SIDE_DIR = Path(__file__).resolve().parent / "side"
PROBE_APP = "handshake_chaos_probe:app"
PROBE_WS_PATH = "/ws/probe"  # the probe's route (handshake_chaos_probe.WS_PATH)
# Where the workers say they are ready and the probe writes the states it holds (a deployment of your
# own that sets it gets worker-side exposure counts too).
STATES_DIR_VARIABLE = "HANDSHAKE_CHAOS_READY_DIR"
MOUNTED_APP = "handshake_chaos_mount:app"
WORKER_BASES = ("auto", "uvicorn_worker", "uvicorn.workers")
# uvicorn-worker 0.3.0 cannot run uvicorn 0.36.0 or later; 0.4.0 can (both published 2025-09-20, the
# worker nine hours after uvicorn, so resolving 0.36.0 as of its own publication picks 0.3.0).
_NEW_WORKER_API_FROM = Version("0.36.0")
_UVICORN_WORKER_FOR_NEW_API = Version("0.4.0")


def paired_worker_base(uvicorn: str | None, uvicorn_worker: str | None) -> str:
    """Where the worker class comes from: the uvicorn-worker package when it is installed and can run
    this uvicorn, else the ``uvicorn.workers`` module uvicorn itself still ships."""
    if not uvicorn_worker:
        return "uvicorn.workers"
    try:
        too_old = (
            Version(str(uvicorn)) >= _NEW_WORKER_API_FROM and Version(uvicorn_worker) < _UVICORN_WORKER_FOR_NEW_API
        )
    except InvalidVersion:
        return "uvicorn_worker"
    return "uvicorn.workers" if too_old else "uvicorn_worker"


@dataclass(frozen=True)
class DeploymentConfig:
    python: str = sys.executable
    app: str = PROBE_APP
    app_path: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 2
    ws: str = "auto"
    worker_base: str = "auto"
    graceful_timeout: int = 10
    worker_timeout: int = 30
    startup_timeout: float = 60.0
    run_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Serve wss:// with a throwaway certificate authority made at start (ca.pem in the run dir).
    tls: bool = False
    # gunicorn masters sharing the listening socket (replicas behind one service).
    replicas: int = 1
    # A logging config the deployment logs through (gunicorn's --log-config-json), as production ones do.
    log_config_json: str | None = None
    server: ServerFamily = DEFAULT_SERVER

    def validate(self) -> None:
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise UsageError(f"target host must be a loopback IP address, got {self.host!r}") from None
        if not address.is_loopback:
            raise UsageError(f"target host must be loopback (127.0.0.0/8 or ::1), got {self.host}")
        if self.workers < 1:
            raise UsageError(f"workers must be at least 1, got {self.workers}")
        if self.replicas < 1:
            raise UsageError(f"replicas must be at least 1, got {self.replicas}")
        spec = family(self.server)
        if self.log_config_json and not spec.takes_log_config_json:
            raise UsageError(f"--log-config-json is gunicorn's flag: with --server {self.server} the tool sets the log")
        if self.ws not in WS_CHOICES:
            raise UsageError(f"unknown ws implementation {self.ws!r} (choose from {', '.join(WS_CHOICES)})")
        if self.worker_base not in WORKER_BASES:
            raise UsageError(f"unknown worker base {self.worker_base!r} (choose from {', '.join(WORKER_BASES)})")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port out of range: {self.port}")
        if self.graceful_timeout < 0 or self.worker_timeout <= 0:
            raise UsageError("graceful and worker timeouts must be positive")
        if ":" not in self.app:
            raise UsageError(f"--app must look like module:attribute, got {self.app!r}")


def check_ws_available(ws: str, versions: dict[str, Any]) -> None:
    """The release has the ws implementation asked for (exit 2 otherwise)."""
    available = [name for name in versions["ws_implementations"] if name != "auto"]
    if ws != "auto" and ws not in available:
        raise UsageError(
            f"uvicorn {versions['uvicorn']} has no ws implementation {ws!r} (it has: {', '.join(available) or 'none'})"
        )


def read_versions(python: str) -> dict[str, Any]:
    """Versions and ws implementations as the target interpreter sees them."""
    script = SIDE_DIR / "handshake_chaos_versions.py"
    try:
        result = subprocess.run([python, str(script)], capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise DeploymentError(f"target interpreter not found: {python}") from None
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"target interpreter {python} did not answer within 60s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeploymentError(f"target interpreter {python} failed to report versions: {last}")
    versions: dict[str, Any] = json.loads(result.stdout)
    if not versions.get("uvicorn") or not versions.get("gunicorn"):
        raise DeploymentError(f"target interpreter {python} lacks uvicorn or gunicorn: {versions}")
    return versions


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeploymentError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class _Replica:
    """One gunicorn master of the deployment: the process we started and its verified view."""

    generation: int
    process: subprocess.Popen[bytes]
    master: ServerMaster


class _Spawner:
    """Starts every master from one long-lived thread.

    A master is started with PR_SET_PDEATHSIG, which fires when the *thread* that forked it
    ends, not the process: a master restarted from a controller thread would be TERMed the
    moment that thread returned. This thread lives exactly as long as the deployment.
    """

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Callable[[], Any], queue.Queue[tuple[bool, Any]]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="handshake-chaos-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            work, answer = request
            try:
                answer.put((True, work()))
            except BaseException as exc:  # handed back to the caller, raised there
                answer.put((False, exc))

    def call(self, work: Callable[[], Any]) -> Any:
        answer: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._requests.put((work, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)


class Deployment:
    """A running deployment; ``start`` returns once every worker of every master is ready."""

    def __init__(self, config: DeploymentConfig) -> None:
        config.validate()
        self.config = config
        self.versions: dict[str, Any] = {}
        self.port = 0
        self._socket: socket.socket | None = None
        self._replicas: list[_Replica] = []
        self._generations = 0
        self._spawner: _Spawner | None = None
        self._lock = threading.Lock()
        self._owned_run_dir: tempfile.TemporaryDirectory[str] | None = None
        self.run_dir = Path()
        self.seen_pids: set[int] = set()

    @property
    def error_log(self) -> Path:
        return self.run_dir / "gunicorn-error.log"

    @property
    def output_log(self) -> Path:
        """The masters' own stdout and stderr (when the family does not log crashes there)."""
        return self.run_dir / "gunicorn-output.log"

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{'wss' if self.config.tls else 'ws'}://{host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The certificate authority clients trust for the embedded deployment's TLS, if any."""
        return self.run_dir / "ca.pem" if self.config.tls else None

    def masters(self) -> list[ServerMaster]:
        """The live masters this deployment started, oldest first (exited ones are reaped here)."""
        with self._lock:
            live = [replica for replica in self._replicas if replica.process.poll() is None]
            self._replicas = live
            return [replica.master for replica in live]

    @property
    def master(self) -> ServerMaster | None:
        """The oldest live master (the only one unless replicas run side by side)."""
        masters = self.masters()
        return masters[0] if masters else None

    def _named(self, generation: int, name: str, suffix: str) -> Path:
        # The first master keeps the plain names (gunicorn.pid); a later one's are numbered.
        return self.run_dir / (f"{name}{suffix}" if generation == 0 else f"{name}-{generation}{suffix}")

    def _make_certificate(self) -> None:
        """A throwaway certificate authority and the server's certificate (--tls)."""
        import trustme  # only a TLS run needs it (and its cryptography)

        authority = trustme.CA(organization_name="handshake-chaos")
        certificate = authority.issue_cert(self.config.host, "localhost", "127.0.0.1", "::1")
        authority.cert_pem.write_to_path(str(self.run_dir / "ca.pem"))
        certificate.private_key_pem.write_to_path(str(self.run_dir / "server-key.pem"))
        certificate.cert_chain_pems[0].write_to_path(str(self.run_dir / "server-cert.pem"))

    @property
    def ready_dir(self) -> Path:
        """Where each worker says it is ready (``handshake_chaos_ready``)."""
        return self.run_dir / "ready"

    def worker_base(self) -> str:
        own = family(self.config.server).worker_base
        if own is not None:
            return own
        if self.config.worker_base != "auto":
            return self.config.worker_base
        return paired_worker_base(self.versions.get("uvicorn"), self.versions.get("uvicorn_worker"))

    def start(self) -> Deployment:
        config = self.config
        self.versions = read_versions(config.python)
        check_ws_available(config.ws, self.versions)
        if config.run_dir is None:
            self._owned_run_dir = tempfile.TemporaryDirectory(prefix="handshake-chaos-")
            self.run_dir = Path(self._owned_run_dir.name)
        else:
            self.run_dir = config.run_dir
            self.run_dir.mkdir(parents=True, exist_ok=True)
        family(config.server).check_release(self.versions)
        try:
            if config.tls:
                self._make_certificate()
            self.ready_dir.mkdir(parents=True, exist_ok=True)
            self._socket = _listen_socket(config.host, config.port)
            self.port = self._socket.getsockname()[1]
            self._spawner = _Spawner()
            for _ in range(config.replicas):
                self.start_master()
        except BaseException:
            self.stop()
            raise
        return self

    def start_master(self) -> ServerMaster:
        """One more master on the listening socket; returns once all its workers are ready."""
        if self._spawner is None or self._socket is None:
            raise DeploymentError("the deployment is not running")
        master: ServerMaster = self._spawner.call(self._spawn_master)
        return master

    def restore(self) -> None:
        """Starts masters until the configured number of replicas serve (after a stop mid-restart)."""
        while len(self.masters()) < self.config.replicas:
            self.start_master()

    def _app(self) -> str:
        return self.config.app if self.config.app == PROBE_APP else MOUNTED_APP

    def _command(self, generation: int, fd: int) -> list[str]:
        config = self.config
        launch = Launch(
            python=config.python,
            app=self._app(),
            fd=fd,
            workers=config.workers,
            ws=config.ws,
            graceful_timeout=config.graceful_timeout,
            worker_timeout=config.worker_timeout,
            run_dir=self.run_dir,
            error_log=self.error_log,
            pidfile=self._named(generation, "gunicorn", ".pid"),
            control_socket=self._named(generation, "gunicorn", ".ctl"),
            versions=self.versions,
            tls=(self.run_dir / "server-cert.pem", self.run_dir / "server-key.pem") if config.tls else None,
            log_config_json=config.log_config_json,
            chdir=os.getcwd(),
        )
        return family(config.server).command(launch)

    def _environment(self) -> dict[str, str]:
        config = self.config
        pythonpath = [str(SIDE_DIR), *config.app_path]
        if os.environ.get("PYTHONPATH"):
            pythonpath.append(os.environ["PYTHONPATH"])
        extra_env = dict(config.env)
        if config.app != PROBE_APP:
            # The user's app, with the probe route mounted beside it.
            extra_env["HANDSHAKE_CHAOS_USER_APP"] = config.app
        return {
            **os.environ,
            **extra_env,
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "HANDSHAKE_CHAOS_WS": config.ws,
            STATES_DIR_VARIABLE: str(self.ready_dir),
            "HANDSHAKE_CHAOS_WORKER_BASE": self.worker_base(),
            "PYTHONUNBUFFERED": "1",
        }

    def _spawn_master(self) -> ServerMaster:
        assert self._socket is not None
        generation, self._generations = self._generations, self._generations + 1
        command = self._command(generation, self._socket.fileno())
        log.info("starting %s on %s:%d: %s", self.config.server, self.config.host, self.port, " ".join(command))
        # uvicorn's workers print a crash's traceback to stderr (multiprocessing): it belongs in the log judged.
        output_path = self.error_log if family(self.config.server).output_is_error_log else self.output_log
        with open(output_path, "ab") as output:
            process = subprocess.Popen(
                command,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(self._socket.fileno(),),
                # Own session: a Ctrl-C in the terminal reaches us, not gunicorn
                # directly; we stop it in order.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            replica = _Replica(generation, process, ServerMaster(process.pid, ready_dir=self.ready_dir))
        except BaseException:
            _stop_process(process, self.config.graceful_timeout)
            raise
        with self._lock:
            self._replicas.append(replica)
        self.seen_pids.add(process.pid)
        self._wait_ready(replica)
        return replica.master

    def _startup_failure(self, why: str) -> DeploymentError:
        tail = ""
        for path in (self.error_log, self.output_log):
            with contextlib.suppress(OSError):
                lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
                if lines:
                    tail = lines[-1].strip()
                    break
        return DeploymentError(f"{family(self.config.server).program} {why}" + (f": {tail}" if tail else ""))

    def _wait_ready(self, replica: _Replica) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            code = replica.process.poll()
            if code is not None:
                raise self._startup_failure(f"exited with code {code} during startup")
            workers = replica.master.workers()
            self.seen_pids.update(worker.pid for worker in workers)
            if len(workers) == self.config.workers and all(replica.master.ready(w.pid) for w in workers):
                if self._accepts_connections():
                    return
            time.sleep(0.05)
        raise self._startup_failure(f"not ready within {self.config.startup_timeout:g}s")

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.config.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self) -> int | None:
        """TERM every master at once, wait past the graceful timeout, KILL only what is left; then the socket.

        Returns the exit code of the oldest master (None when none was running)."""
        with self._lock:
            replicas, self._replicas = self._replicas, []
        codes = _stop_processes([replica.process for replica in replicas], self.config.graceful_timeout)
        if self._spawner is not None:
            self._spawner.close()
            self._spawner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._owned_run_dir is not None:
            self._owned_run_dir.cleanup()
            self._owned_run_dir = None
        return codes[0] if codes else None

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _stop_process(process: subprocess.Popen[bytes], graceful_timeout: int) -> int:
    [code] = _stop_processes([process], graceful_timeout)
    return code


def _stop_processes(processes: list[subprocess.Popen[bytes]], graceful_timeout: int) -> list[int]:
    """TERM masters together (their graceful timeouts overlap), KILL any that outlast it, then their workers."""
    survivors: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            survivors += psutil.Process(process.pid).children(recursive=True)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + graceful_timeout + 5
    codes: list[int] = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            log.warning("gunicorn master %d ignored TERM; killing it", process.pid)
            process.kill()
            codes.append(process.wait())
    for child in survivors:
        # The master is gone; a worker still running with the same create time is ours.
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()
    psutil.wait_procs(survivors, timeout=5)
    return codes
