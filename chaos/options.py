"""The options of one chaos run: built once at the edge (Locust options, CLI), passed explicitly."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaos.controller import ControllerConfig
from chaos.errors import UsageError
from chaos.gate import GatePolicy
from chaos.launcher import TargetConfig


@dataclass(frozen=True)
class ChaosOptions:
    hold_seconds: float = 2.0
    hold_jitter: float = 0.5
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
    run_dir: str | None = None
    term_interval: float = 3.0
    term_jitter: float = 1.0
    min_alive: int = 1
    dry_run: bool = False
    max_signals: int | None = None
    signal_name: str = "TERM"
    target_pid: int | None = None
    target_pidfile: str | None = None
    server_log: str | None = None
    release: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9646
    gate: bool = False
    http_rejection_is_error: bool = False
    allow: str = ""
    report_json: str | None = None

    def validate(self, host: str | None) -> None:
        if not 0 <= self.hold_seconds <= 60:
            raise UsageError(f"hold time must be within 0..60 seconds, got {self.hold_seconds:g}")
        if not 0 <= self.hold_jitter <= 1:
            raise UsageError(f"hold jitter is a fraction within 0..1, got {self.hold_jitter:g}")
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
        if not 0 <= self.metrics_port <= 65535:
            raise UsageError(f"metrics port out of range: {self.metrics_port}")
        self.gate_policy()
        self.controller_config().validate(None if host else self.workers)
        if not host:
            self.target_config().validate()

    def gate_policy(self) -> GatePolicy:
        return GatePolicy.parse(item for item in self.allow.split(",") if item.strip())

    def controller_config(self) -> ControllerConfig:
        return ControllerConfig(
            interval=self.term_interval,
            jitter=self.term_jitter,
            min_alive=self.min_alive,
            dry_run=self.dry_run,
            max_signals=self.max_signals,
            signal_name=self.signal_name,
        )

    def target_config(self) -> TargetConfig:
        kwargs: dict[str, Any] = {"ws": self.ws, "workers": self.workers, "graceful_timeout": self.graceful_timeout}
        if self.target_python:
            kwargs["python"] = self.target_python
        if self.app:
            kwargs["app"] = self.app
        if self.run_dir:
            kwargs["run_dir"] = Path(self.run_dir)
        return TargetConfig(**kwargs)


def handshake_url(base: str, options: ChaosOptions, rng: random.Random | None = None) -> str:
    """The URL each user opens: the probe route with its hold and keep-open times.

    Each attempt's hold is drawn within ``hold_seconds * (1 +/- hold_jitter)``: users
    started together otherwise move in lockstep, and a TERM that lands between two
    waves finds nothing pending.
    """
    hold = options.hold_seconds
    if options.hold_jitter and rng is not None:
        hold *= rng.uniform(1 - options.hold_jitter, 1 + options.hold_jitter)
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    # The server keeps the connection longer than the client, so a clean run ends with
    # the client's own close and any server-initiated close stands out.
    server_keep = options.keep_open_seconds + 5
    return f"{scheme}://{parts.netloc}{options.ws_path}?hold={hold:.3f}&keep={server_keep:g}"
