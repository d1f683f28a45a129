"""The deployment a run works on: one the run starts here (embedded), or one already running (--host).

Either way the run sees the same few things: the URL users open, the port its workers listen on,
the master signals go to, the versions under test and the error log to follow.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from chaos.deployment.launcher import STATES_DIR_VARIABLE, Deployment, read_versions
from chaos.deployment.processes import ServerMaster
from chaos.errors import ChaosError
from chaos.results import SignalRecord
from chaos.run.options import ChaosOptions

log = logging.getLogger(__name__)


class AttachedDeployment:
    """The run's view of its deployment; ``stop`` stops it only if the run started it."""

    def __init__(
        self,
        host: str,
        listen_port: int | None,
        versions: dict[str, Any],
        error_log: Path | None,
        deployment: Deployment | None = None,
        external_master: ServerMaster | None = None,
        states_dir: Path | None = None,
    ) -> None:
        self.host = host
        self.listen_port = listen_port
        self.versions = versions
        self.error_log = error_log
        self.deployment = deployment
        self._external_master = external_master
        # Where the probe's workers write the states they hold (``states-<pid>.json``), when they do.
        self.states_dir = deployment.ready_dir if deployment is not None else states_dir

    @property
    def embedded(self) -> bool:
        return self.deployment is not None

    @property
    def master(self) -> ServerMaster | None:
        """The master signals go to: the embedded deployment's oldest live one, or the one named."""
        return self.deployment.master if self.deployment is not None else self._external_master

    def worker_class(self) -> str:
        return self.deployment.worker_base() if self.deployment is not None else "external"

    def seen_pids(self, records: list[SignalRecord]) -> list[int]:
        """Every process of the embedded deployment the run saw (none of an external one: not ours)."""
        if self.deployment is None:
            return []
        pids: set[int] = set(self.deployment.seen_pids)
        if self.master is not None:
            pids.add(self.master.pid)
        for record in records:
            pids.add(record.worker_pid)
            pids.update(pid for pid in (record.replacement_pid, record.master_pid) if pid)
        return sorted(pids)

    def stop(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()


def start_embedded(options: ChaosOptions) -> tuple[AttachedDeployment, ChaosOptions]:
    """Starts the embedded deployment; the options come back with what its start settled (its TLS CA)."""
    deployment = Deployment(options.target_config()).start()
    # A deployment logging through its own config writes where that config says (--server-log).
    error_log = Path(options.server_log) if options.server_log else deployment.error_log
    if deployment.ca_file is not None and options.ca_file is None:
        # The users trust the deployment's throwaway CA, and only that.
        options = dataclasses.replace(options, ca_file=str(deployment.ca_file))
    attached = AttachedDeployment(deployment.url, deployment.port, dict(deployment.versions), error_log, deployment)
    return attached, options


def find_external(options: ChaosOptions, host: str) -> AttachedDeployment:
    """The deployment at ``host``, with its master when one was named (--target-pid, --target-pidfile)."""
    master = None
    if options.target_pid is not None or options.target_pidfile is not None:
        master = ServerMaster(options.master_pid())
    versions = _versions_of(master) if master is not None else {}
    error_log = Path(options.server_log) if options.server_log else None
    states_dir = _states_dir_of(master) if master is not None else None
    return AttachedDeployment(
        host, urlsplit(host).port, versions, error_log, external_master=master, states_dir=states_dir
    )


def _states_dir_of(master: ServerMaster) -> Path | None:
    """Where the deployment's probe writes the states it holds: ``HANDSHAKE_CHAOS_READY_DIR`` as the
    master was started with it (its workers inherit it), read from the process's own environment."""
    try:
        directory = master.process().environ().get(STATES_DIR_VARIABLE)
    except psutil.Error:
        return None
    return Path(directory) if directory and Path(directory).is_dir() else None


def _versions_of(master: ServerMaster) -> dict[str, Any]:
    """Versions as the external deployment's own interpreter reports them."""
    try:
        return read_versions(interpreter_of(master.process()))
    except (psutil.Error, ChaosError) as exc:  # best effort: the run goes on without them
        log.warning("could not read the deployment's versions: %s", exc)
        return {}


def interpreter_of(process: psutil.Process) -> str:
    """The interpreter as the process was started: a virtualenv's ``bin/python`` from its argv[0] (or its
    script's ``#!`` line). ``/proc/PID/exe`` resolves the virtualenv's symlink to the base interpreter,
    which has none of the deployment's packages: every series would say uvicorn "none"."""
    try:
        argv0 = process.cmdline()[0]
        started = argv0 if os.path.isabs(argv0) else os.path.join(process.cwd(), argv0)
    except (psutil.Error, IndexError):
        return process.exe()
    if "python" in os.path.basename(started) and os.access(started, os.X_OK):
        return started
    try:
        with open(started, "rb") as script:  # gunicorn's own entry point script
            first = script.readline(512)
    except OSError:
        return process.exe()
    if first.startswith(b"#!"):
        interpreter = first[2:].decode(errors="replace").split()
        if interpreter and os.access(interpreter[0], os.X_OK):
            return interpreter[0]
    return process.exe()
