"""One chaos run: the deployment (embedded or external), the controller, and the summary.

Independent of Locust so that the locustfile, ``soak`` and the tests drive it the
same way. The controller runs in a thread; under Locust's gevent monkey-patching
that thread is a greenlet, and its sleeps yield to the users.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaos.controller import ControllerConfig, ControllerState, RollingTermController
from chaos.errors import UsageError
from chaos.exposure import PendingRegistry, SocketExposure
from chaos.launcher import Target, TargetConfig
from chaos.processes import GunicornMaster, read_pidfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosOptions:
    hold_seconds: float = 2.0
    keep_open_seconds: float = 1.0
    ws_path: str = "/ws/probe"
    connect_timeout: float = 5.0
    handshake_timeout: float = 30.0
    max_handshakes: int = 1_000_000
    ws: str = "auto"
    workers: int = 2
    graceful_timeout: int = 10
    target_python: str | None = None
    app: str | None = None
    term_interval: float = 3.0
    term_jitter: float = 1.0
    min_alive: int = 1
    dry_run: bool = False
    target_pid: int | None = None
    target_pidfile: str | None = None
    report_json: str | None = None

    def validate(self, host: str | None) -> None:
        if not 0 <= self.hold_seconds <= 60:
            raise UsageError(f"hold time must be within 0..60 seconds, got {self.hold_seconds:g}")
        if self.keep_open_seconds < 0:
            raise UsageError("keep-open time must not be negative")
        if self.connect_timeout <= 0 or self.handshake_timeout <= 0:
            raise UsageError("timeouts must be positive")
        if self.max_handshakes < 1:
            raise UsageError("max handshakes must be at least 1")
        if not self.ws_path.startswith("/"):
            raise UsageError(f"ws path must start with '/', got {self.ws_path!r}")
        if self.target_pid is not None and self.target_pidfile is not None:
            raise UsageError("give the target master as a pid or a pidfile, not both")
        if host and urlsplit(host).scheme not in ("ws", "wss", "http", "https"):
            raise UsageError(f"--host must be a ws:// or http:// URL, got {host!r}")
        if not host and (self.target_pid is not None or self.target_pidfile is not None):
            raise UsageError("a target master pid/pidfile needs --host pointing at that deployment")
        embedded_workers = None if host else self.workers
        self.controller_config().validate(embedded_workers)

    def controller_config(self) -> ControllerConfig:
        return ControllerConfig(
            interval=self.term_interval,
            jitter=self.term_jitter,
            min_alive=self.min_alive,
            dry_run=self.dry_run,
        )

    def target_config(self) -> TargetConfig:
        kwargs: dict[str, Any] = {"ws": self.ws, "workers": self.workers, "graceful_timeout": self.graceful_timeout}
        if self.target_python:
            kwargs["python"] = self.target_python
        if self.app:
            kwargs["app"] = self.app
        return TargetConfig(**kwargs)


def handshake_url(base: str, options: ChaosOptions) -> str:
    """The URL each user opens: the probe route with its hold and keep-open times."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    # The server keeps the connection longer than the client, so a clean run ends with
    # the client's own close and any server-initiated close stands out.
    server_keep = options.keep_open_seconds + 5
    return f"{scheme}://{parts.netloc}{options.ws_path}?hold={options.hold_seconds:g}&keep={server_keep:g}"


class ChaosSession:
    def __init__(self, options: ChaosOptions, host: str | None) -> None:
        options.validate(host)
        self.options = options
        self.host = host
        self.embedded = not host
        self.registry = PendingRegistry()
        self.target: Target | None = None
        self.master: GunicornMaster | None = None
        self.listen_port: int | None = None
        self.controller: RollingTermController | None = None
        self.controller_states: list[ControllerState] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.time()

    def start(self) -> str:
        """Start (embedded) or locate (external) the deployment; returns the base URL."""
        if self.embedded:
            self.target = Target(self.options.target_config()).start()
            self.master = self.target.master
            self.listen_port = self.target.port
            self.host = self.target.url
        else:
            assert self.host is not None
            self.listen_port = urlsplit(self.host).port
            if self.options.target_pid is not None:
                self.master = GunicornMaster(self.options.target_pid)
            elif self.options.target_pidfile is not None:
                self.master = GunicornMaster(read_pidfile(self.options.target_pidfile))
        return self.host

    def start_controller(self) -> None:
        if self.master is None or self._thread is not None:
            return
        exposure = SocketExposure(self.registry, self.listen_port) if self.listen_port else None
        self.controller = RollingTermController(self.master, self.options.controller_config(), exposure)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.controller.run, args=(self._stop,), name="handshake-chaos-controller", daemon=True
        )
        self._thread.start()

    def stop_controller(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=self.options.graceful_timeout + 70)
        if self.controller is not None:
            self.controller_states.append(self.controller.state)

    def close(self) -> None:
        self.stop_controller()
        if self.target is not None:
            self.target.stop()

    def seen_pids(self) -> list[int]:
        pids: set[int] = set(self.target.seen_pids) if self.target else set()
        if self.master is not None:
            pids.add(self.master.pid)
        for state in self.controller_states:
            for record in state.records:
                pids.add(record.worker_pid)
                if record.replacement_pid:
                    pids.add(record.replacement_pid)
        return sorted(pids)

    def summary(self, outcomes: dict[str, int]) -> dict[str, Any]:
        records = [record for state in self.controller_states for record in state.records]
        sent = [record for record in records if not record.dry_run]
        return {
            "target": {
                "url": self.host,
                "embedded": self.embedded,
                "master_pid": self.master.pid if self.master else None,
                "pids": self.seen_pids(),
                "port": self.listen_port,
                "versions": self.target.versions if self.target else {},
            },
            "options": asdict(self.options),
            "signals": {
                "sent": len(sent),
                "dry_run": len(records) - len(sent),
                "landed_with_pending": sum(1 for record in sent if record.pending > 0),
                "pending_at_term": [record.pending for record in records],
                "records": [record.as_dict() for record in records],
            },
            "outcomes": dict(sorted(outcomes.items())),
            "duration_seconds": round(time.time() - self.started, 3),
        }

    def write_report(self, summary: dict[str, Any]) -> None:
        if self.options.report_json:
            path = Path(self.options.report_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2) + "\n")


def format_summary(summary: dict[str, Any]) -> str:
    signals = summary["signals"]
    lines = ["", "handshake-chaos summary"]
    versions = summary["target"]["versions"]
    if versions:
        lines.append(
            f"  target: uvicorn {versions.get('uvicorn')}, gunicorn {versions.get('gunicorn')}, "
            f"ws {summary['options']['ws']}, python {versions.get('python')}"
        )
    lines.append(
        f"  signals sent: {signals['sent']} (dry-run: {signals['dry_run']}), "
        f"landed with pending handshakes: {signals['landed_with_pending']}"
    )
    lines.append(f"  pending handshakes at each signal: {signals['pending_at_term'] or 'none'}")
    replacement = [r["replacement_seconds"] for r in signals["records"] if r["replacement_seconds"] is not None]
    if replacement:
        lines.append(
            f"  worker replacement seconds: min {min(replacement):.2f}, max {max(replacement):.2f}, "
            f"mean {sum(replacement) / len(replacement):.2f}"
        )
    lines.append("  outcomes:")
    for name, count in summary["outcomes"].items():
        lines.append(f"    {name:<22} {count}")
    if not summary["outcomes"]:
        lines.append("    (no handshake attempted)")
    return "\n".join(lines)
